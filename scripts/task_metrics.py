"""Re-run the tasks (any of the six, any cell) and write their metrics table and examples.

    python scripts/task_metrics.py --backend numba --tasks tagging --cell rnn gru --out runs/tasks \
        --page docs/tasks/index.md

Each task trains with its defaults and seed 0, saves its checkpoint to OUT/TASK-CELL, and writes OUT/TASK-CELL.json
(the ``--metrics-out`` record plus the cell, details, examples and the training time); sentiment also reports its
10-fold cross-validated accuracy (``--cv``). The Markdown table (a row per task and cell: metric, baseline, ours,
training time) and the examples go to OUT/tasks.md and, with ``--page FILE.md``, between the
``<!-- seqtasks:begin -->`` and ``<!-- seqtasks:end -->`` markers of that page. The table is built from every
OUT/TASK-CELL.json (or TASK-VARIANT-CELL.json, e.g. tagging-full-lstm.json; OUT/TASK.json is the simple-RNN
record too) present, also one that is a bare ``train --metrics-out`` file; ``--table-only`` re-renders it without
training.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
from pathlib import Path

from rnnbackends.cli.common import one_blas_thread
from rnnbackends.files import write_atomically
from rnnbackends.tasks import TASKS, get_task
from rnnbackends.tasks.base import CELL

CELLS = CELL.choices
DATA = {"sentiment": "UCI Sentiment Labelled Sentences: 2,400 train / 300 val / 300 test",
        "timeseries": "airline passengers, monthly 1949–1960: test 1959–1960 (24)",
        "tagging": "UD English-EWT: train subset (2,065 sentences) / dev / test (25,094 words)",
        "textgen": "tiny Shakespeare, first 90 % / last 10 % of 1,115,394 chars",
        "translation": "Tatoeba en→es, first 40k pairs (≤ 11 English tokens): 37k train / 1k val / 2k test",
        "speech": "spoken digit strings (eSpeak NG), 800 utterances; test voices never heard"}
EXAMPLE_LINES = 8                                   # of each record's examples on the page
BEGIN, END = "<!-- seqtasks:begin -->", "<!-- seqtasks:end -->"


RECORD = re.compile(r"(?P<task>[a-z]+)(?:-(?P<variant>[a-z0-9]+))??(?:-(?P<cell>rnn|gru|lstm))?\.json")


def run(task, cell, backend, out, seed, folds):
    """Train one task with its defaults and ``cell``, and write OUT/TASK-CELL.json; returns the record."""
    options = {"cell": cell, **({"cv": folds} if task == "sentiment" and folds else {})}
    with one_blas_thread():
        result = get_task(task).train(backend=backend, seed=seed, save=out / f"{task}-{cell}", progress=True,
                                      log=lambda line: print(line, file=sys.stderr), **options)
    record = {**result.metrics(), "cell": cell, "baselines": result.baselines, "details": result.details,
              "examples": result.examples, "seconds": result.seconds, "seed": seed,
              "epochs": result.histories[0] if result.histories else [],
              "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared)"}
    write_atomically(out / f"{task}-{cell}.json", json.dumps(record, indent=1) + "\n")
    return record


def cross_validation(details):
    """The k-fold entry of a sentiment record's details, or None."""
    return next((value for key, value in details.items() if key.endswith("-fold cross-validation")), None)


def ours(record):
    """The model's figure as the table shows it."""
    details, task, value = record.get("details", {}), record["task"], record["value"]
    if task == "tagging" and "oov_accuracy" in details:
        return f"**{value:.4f}** (OOV {details['oov_accuracy']:.3f})"
    if task == "textgen" and "bits_per_char" in details:
        return f"**{value:.3f}** nats ({details['bits_per_char']:.3f} bits)"
    if task == "translation" and "chrf_beam" in details:
        return f"**{value:.2f}**, chrF {details['chrf_beam']:.1f} (greedy BLEU {details['bleu_greedy']:.2f})"
    if task == "translation" and "bleu_greedy" in details:
        return f"**{value:.2f}** (greedy {details['bleu_greedy']:.2f})"
    if task == "speech" and "test sentence accuracy" in details:
        return f"**{value:.3f}** (sentence accuracy {details['test sentence accuracy']:.2f})"
    scores = details.get("scores (RMSE, MAE)", {})
    if task == "timeseries" and "RNN multi-step" in scores:
        return (f"**{value:.1f}** (MAE {scores['RNN'][1]:.1f}); {details['test']} steps ahead "
                f"{scores['RNN multi-step'][0]:.1f}")
    cv = cross_validation(details)
    if cv is not None:
        return f"**{value:.3f}**; {len(cv['ours']['folds'])}-fold CV {cv['ours']['mean']:.3f} ± {cv['ours']['std']:.3f}"
    return f"**{value:.4g}**"


def baseline(record):
    """The best baseline as the table shows it."""
    details, baselines = record.get("details", {}), record.get("baselines")
    if record["task"] == "tagging" and "baseline_oov_accuracy" in details:
        return f"{record['baseline']:.4f} most frequent tag (OOV {details['baseline_oov_accuracy']:.3f})"
    if not baselines:                                                # a bare --metrics-out record
        names = get_task(record["task"]).baselines
        return f"{record['baseline']:.3f} {names[0] if len(names) == 1 else 'better of ' + ' and '.join(names)}"
    pick = max if record["higher_is_better"] else min
    name = pick(baselines, key=baselines.get)
    scores = details.get("scores (RMSE, MAE)", {})
    if f"{name} multi-step" in scores:
        return (f"{record['baseline']:.1f} {name} (MAE {scores[name][1]:.1f}); {details['test']} steps ahead "
                f"{scores[name + ' multi-step'][0]:.1f}")
    cv = cross_validation(details)
    if cv is not None and name in cv:
        return (f"{record['baseline']:.3f} {name}; {len(cv[name]['folds'])}-fold CV {cv[name]['mean']:.3f} ± "
                f"{cv[name]['std']:.3f}")
    return f"{record['baseline']:.3f} {name}"


def data(record):
    """The data and split as the table shows them (translation's deduplicated split from its record)."""
    details = record.get("details", {})
    if record["task"] == "tagging" and "train_sentences" in details:
        part = "full train" if record["variant"] == "full" else "train subset"
        return (f"UD English-EWT: {part} ({details['train_sentences']:,} sentences) / dev / test "
                f"({details['test_words']:,} words)")
    if record["variant"]:
        return f"{DATA[record['task']]}, {record['variant']}"
    if record["task"] == "translation" and "duplicates_removed" in details:
        return (f"Tatoeba en→es, first 40k pairs less {details['duplicates_removed']:,} duplicates: "
                f"{details['train_pairs']:,} train / {details['validation_pairs']:,} val / "
                f"{details['test_pairs']:,} test")
    return DATA[record["task"]]


def minutes(record):
    """The training time as the table shows it: the training's wall time where the record has it apart from
    ``seconds`` (which is an evaluation's when the record comes from ``evaluate``), and its CPU time if recorded."""
    details = record.get("details", {})
    seconds = record.get("training_wall_seconds", details.get("training_wall_seconds", record.get("seconds")))
    cpu = next((source[key] for source in (record, details) for key in CPU_KEYS if key in source), None)
    if cpu is None and SPEECH_TIMES in details:                      # "wall, CPU" in seconds
        cpu = float(str(details[SPEECH_TIMES]).split(",")[1])
    wall = "not recorded" if seconds is None else f"{seconds / 60:.1f} min"
    return wall if cpu is None else f"{wall} (CPU {cpu / 60:.1f} min)"


CPU_KEYS = ("training_cpu_seconds", "training_process_cpu_seconds")
SPEECH_TIMES = "recogniser training: wall seconds, CPU seconds (all threads)"


def markdown(records):
    """The table of every task and cell, and the examples a person sees."""
    lines = ["| task | cell | data | metric | baseline | ours | backend | training time |",
             "|---|---|---|---|---|---|---|---|"]
    for r in records:
        name = f"{r['task']} ({r['variant']})" if r["variant"] else r["task"]
        lines.append(f"| {name} | {r['cell']} | {data(r)} | {r['metric']} | {baseline(r)} | {ours(r)} "
                     f"| {r['backend']} | {minutes(r)} |")
    lines.append("")
    lines.append("Training times are the wall-clock time of the whole run (reading data, training, evaluating, "
                 "decoding the test set; for sentiment also the cross-validation's ten extra trainings) on a 2-core "
                 "machine shared with other jobs (load averages of 3–20 during these runs), with BLAS and Numba on "
                 "one thread each. Where a record keeps the training's own wall time apart, that is the time shown; "
                 "in brackets the training process's CPU time where recorded, which is what the training needs on "
                 "one core of a quiet machine.")
    for r in records:
        if not r.get("examples"):
            continue
        best, epochs = r.get("details", {}).get("best_epoch"), r.get("epochs", [])
        when = f" (best epoch {best} of {len(epochs)})" if best is not None else ""
        name = f"{r['task']} ({r['variant']})" if r["variant"] else r["task"]
        lines += ["", f"**{name}, {r['cell']}**{when}:", "", "```"]
        lines += r["examples"][:EXAMPLE_LINES] + (["..."] if len(r["examples"]) > EXAMPLE_LINES else [])
        lines.append("```")
    return "\n".join(lines) + "\n"


def read_records(out):
    """Every record in OUT named TASK[-VARIANT]-CELL.json (TASK.json: the simple RNN's, unless TASK-rnn.json is
    there too), in task, variant, cell order; other JSON files are left alone."""
    found = {}
    for path in sorted(out.glob("*.json")):
        match = RECORD.fullmatch(path.name)
        if match is None or match["task"] not in TASKS:
            continue
        key = (match["task"], match["variant"] or "", match["cell"] or "rnn")
        if key in found and match["cell"] is None:
            continue                                                 # TASK-rnn.json wins over TASK.json
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from None
        if record.get("task") != key[0]:
            raise ValueError(f"{path}: a record of task {record.get('task')!r}, not {key[0]}")
        found[key] = {**record, "cell": key[2], "variant": key[1]}
    order = {task: i for i, task in enumerate(TASKS)}
    return [found[k] for k in sorted(found, key=lambda k: (order[k[0]], k[1], CELLS.index(k[2])))]


def write_page(page, text):
    """Replace what lies between the markers of ``page`` with ``text``."""
    content = page.read_text(encoding="utf-8")
    if BEGIN not in content or END not in content:
        raise ValueError(f"{page}: no {BEGIN} ... {END} markers to write between")
    head, rest = content.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    write_atomically(page, f"{head}{BEGIN}\n{text}{END}{tail}")


def main(argv=None):
    """Parse the options, re-run the chosen tasks and cells, write the table; bad input is one line and exit 2."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS), help="tasks to re-run")
    parser.add_argument("--cell", nargs="+", choices=CELLS, default=["rnn"], help="cells to re-run (default rnn)")
    parser.add_argument("--cv", type=int, default=10, metavar="K",
                        help="sentiment: folds of the cross-validation (default 10; 0 leaves it out)")
    parser.add_argument("--backend", help="backend name (default: selected as usual)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/tasks"), help="checkpoints and JSON records")
    parser.add_argument("--page", "--readme", dest="page", type=Path,
                        help="write the table between the seqtasks markers of this Markdown page")
    parser.add_argument("--table-only", action="store_true", help="re-render from OUT/*.json without training")
    args = parser.parse_args(argv)
    try:
        if args.out.exists() and not args.out.is_dir():
            raise ValueError(f"--out {args.out}: is a file; give a folder")
        if args.page is not None and not args.page.is_file():
            raise ValueError(f"--page {args.page}: no such file")
        if args.cv and args.cv < 3:
            raise ValueError(f"--cv {args.cv}: give at least 3 folds, or 0 for none")
        args.out.mkdir(parents=True, exist_ok=True)
        if not args.table_only:
            for task in args.tasks:
                for cell in args.cell:
                    record = run(task, cell, args.backend, args.out, args.seed, args.cv)
                    print(f"{task} ({cell}): {record['metric']} {record['value']:.4f} vs baseline "
                          f"{record['baseline']:.4f} in {record['seconds']:.0f} s", file=sys.stderr)
        text = markdown(read_records(args.out))
        write_atomically(args.out / "tasks.md", text)
        if args.page:
            write_page(args.page, text)
    except (OSError, ValueError, KeyError) as exc:
        print(f"task_metrics: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
