"""Re-run the sequence tasks (tagging, textgen, translation) and write their metrics table and examples.

    python scripts/task_metrics.py --backend numba --out runs/tasks --page docs/tasks/index.md

Each task trains with its defaults and seed 0, saves its checkpoint to OUT/TASK, and writes OUT/TASK.json (the
``--metrics-out`` record plus details, examples and the training time). The Markdown table and the examples go to
OUT/tasks.md and, with ``--page FILE.md``, between the ``<!-- seqtasks:begin -->`` and ``<!-- seqtasks:end -->``
markers of that page. ``--tasks`` re-runs only some tasks; the table is built from every OUT/TASK.json present.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

from rnnbackends.cli.common import one_blas_thread
from rnnbackends.files import write_atomically
from rnnbackends.tasks import get_task

TASKS = ("tagging", "textgen", "translation")
DATA = {"tagging": "UD English-EWT: train subset (2,065 sentences) / dev / test (25,094 words)",
        "textgen": "tiny Shakespeare, first 90 % / last 10 % of 1,115,394 chars",
        "translation": "Tatoeba en→es, first 40k pairs (≤ 11 English tokens): 37k train / 1k val / 2k test"}
BEGIN, END = "<!-- seqtasks:begin -->", "<!-- seqtasks:end -->"


def run(task, backend, out, seed):
    """Train one task with its defaults and write OUT/TASK.json; returns the record."""
    with one_blas_thread():
        result = get_task(task).train(backend=backend, seed=seed, save=out / task, progress=True,
                                      log=lambda line: print(line, file=sys.stderr))
    record = {**result.metrics(), "baselines": result.baselines, "details": result.details,
              "examples": result.examples, "seconds": result.seconds, "seed": seed,
              "epochs": result.histories[0],
              "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared)"}
    write_atomically(out / f"{task}.json", json.dumps(record, indent=1) + "\n")
    return record


def ours(record):
    """The model's figure as the table shows it."""
    details = record["details"]
    if record["task"] == "tagging":
        return f"**{record['value']:.4f}** (OOV {details['oov_accuracy']:.3f})"
    if record["task"] == "textgen":
        return f"**{record['value']:.3f}** nats ({details['bits_per_char']:.3f} bits)"
    return f"**{record['value']:.2f}** (greedy {details['bleu_greedy']:.2f})"


def baseline(record):
    """The best baseline as the table shows it."""
    if record["task"] == "tagging":
        return (f"{record['baseline']:.4f} most frequent tag "
                f"(OOV {record['details']['baseline_oov_accuracy']:.3f})")
    pick = max if record["higher_is_better"] else min
    name = pick(record["baselines"], key=record["baselines"].get)
    return f"{record['baseline']:.3f} {name}"


def markdown(records):
    """The table of every task and the examples a person sees."""
    lines = ["| task | data | metric | baseline | ours | backend | training time |", "|---|---|---|---|---|---|---|"]
    for r in records:
        lines.append(f"| {r['task']} | {DATA[r['task']]} | {r['metric']} | {baseline(r)} | {ours(r)} | {r['backend']} "
                     f"| {r['seconds'] / 60:.1f} min |")
    lines.append("")
    lines.append("Training times are the wall-clock time of the whole run (reading data, training, evaluating, "
                 "decoding the test set) on a 2-core machine shared with other jobs, with BLAS and Numba on one "
                 "thread each (oversubscribed threads made these runs about 10× slower).")
    for r in records:
        lines += ["", f"**{r['task']}** (best epoch {r['details'].get('best_epoch')} of {len(r['epochs'])}):", "",
                  "```"]
        lines += r["examples"]
        lines.append("```")
    return "\n".join(lines) + "\n"


def write_readme(readme, text):
    """Replace what lies between the markers of ``readme`` with ``text``."""
    if not readme.is_file():
        raise ValueError(f"--page {readme}: no such file")
    content = readme.read_text(encoding="utf-8")
    if BEGIN not in content or END not in content:
        raise ValueError(f"{readme}: no {BEGIN} ... {END} markers to write between")
    head, rest = content.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    write_atomically(readme, f"{head}{BEGIN}\n{text}{END}{tail}")


def main(argv=None):
    """Parse the options, re-run the chosen tasks, write the table; bad input is one line and exit status 2."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS), help="tasks to re-run")
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
        args.out.mkdir(parents=True, exist_ok=True)
        if not args.table_only:
            for task in args.tasks:
                record = run(task, args.backend, args.out, args.seed)
                print(f"{task}: {record['metric']} {record['value']:.4f} vs baseline {record['baseline']:.4f} "
                      f"in {record['seconds']:.0f} s", file=sys.stderr)
        records = [json.loads((args.out / f"{t}.json").read_text(encoding="utf-8")) for t in TASKS
                   if (args.out / f"{t}.json").is_file()]
        text = markdown(records)
        write_atomically(args.out / "tasks.md", text)
        if args.page:
            write_readme(args.page, text)
    except (OSError, ValueError, KeyError) as exc:
        print(f"task_metrics: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
