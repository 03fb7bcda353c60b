"""The perf headline: a short Markdown summary of saved results, written between markers in the README and docs.

``python -m perf headline perf/results/cpu.json perf/results/threads-1/cpu.json`` renders one block (per suite, a
table of geometric-mean speed-ups per group, one pair of columns per result, and the suite's targets) and replaces
what lies between ``<!-- perf-headline:start -->`` and ``<!-- perf-headline:end -->`` in README.md and
docs/perf.md (``--into`` names other files, ``--print`` writes nothing).
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path

from perf import runner
from rnnbackends.files import write_atomically

BEGIN, END = "<!-- perf-headline:start -->", "<!-- perf-headline:end -->"
ROOT = Path(__file__).resolve().parent.parent
PAGES = (ROOT / "README.md", ROOT / "docs" / "perf.md")
PEER_NAMES = {"torch": "native PyTorch on the CPU (`torch.nn.RNN`, `GRU` or `LSTM`, the same cell)",
              "cudnn": "cuDNN (`torch.nn.RNN`, `GRU` or `LSTM` on CUDA, the same cell)"}


def load(paths):
    """The results saved at paths, each with the path it came from under "path"."""
    results = []
    for path in paths:
        try:
            result = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SystemExit(f"{path}: cannot read a perf result ({exc}); give a <suite>.json from perf run")
        if not isinstance(result, dict) or "rows" not in result:
            raise SystemExit(f"{path}: not a perf result (no rows); give a <suite>.json from perf run")
        result["path"] = _shown(path)
        results.append(result)
    return results


def _shown(path):
    """path relative to the repository when it lies inside it."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def column(result):
    """The label of one result's columns: thread count on the CPU, the device on the GPU."""
    if result.get("suite") == "cpu":
        threads = result.get("threads")
        return f"{threads} thread{'s' if threads != 1 else ''}" + (", contended" if result.get("contended") else "")
    return result.get("machine", {}).get("device", result.get("suite", ""))


def headline(results):
    """The Markdown block: one section per suite (cpu, gpu) in the order given."""
    suites = {}
    for result in results:
        suites.setdefault(result.get("suite"), []).append(result)
    return "\n".join(suite_headline(group) for group in suites.values())


def best_peer_speedups(result, impl):
    """{(group, H, B, T, pass): (speed-up of impl over the fastest peer, that peer)} of a result with peers."""
    return {(r["group"], r["H"], r["B"], r["T"], r["pass"]): (r["speedup_vs_best_peer"], r["best_peer"])
            for r in runner.timed_rows(result) if r["impl"] == impl and "speedup_vs_best_peer" in r}


def suite_headline(results):
    """One suite's section: speed-up table per group (over the fastest peer where the results have several peers,
    then per shape), the suite's targets, contended runs, provenance and where the tables are."""
    module = importlib.import_module(f"perf.{results[0]['suite']}")
    if hasattr(module, "headline"):                                 # a suite with its own section (perf.e2e)
        return module.headline(results)
    contended = [r for r in results if r.get("contended")]
    results = [r for r in results if not r.get("contended")] or contended
    first = results[0]
    peer = runner.peer_of(first)
    impl = runner.primary_impl(first, peer)
    best = [best_peer_speedups(r, impl) for r in results]
    if all(best):
        names = ", ".join(dict.fromkeys(n for r in results for n in r.get("peers", [])))
        lines = [f"Speed-up of `{impl}` over the fastest peer of each shape ({names}; forward+backward: those with "
                 f"a backward), {first.get('dtype', 'float32')}, geometric mean per group of shapes (worst shape in "
                 "brackets); higher is better. Each peer's results were checked against the NumPy reference first.",
                 ""]
    else:
        best = None
        lines = [f"Speed-up of `{impl}` over {PEER_NAMES.get(peer, peer)}, {first.get('dtype', 'float32')}, "
                 "geometric mean per group of shapes (worst shape in brackets); higher is better.", ""]
    header = "| group (shapes) |" + "".join(f" forward, {column(r)} | fwd+bwd, {column(r)} |" for r in results)
    lines += [header, "|---|" + "---|---|" * len(results)]
    groups = dict.fromkeys(row["group"] for r in results for row in runner.timed_rows(r))
    for group in groups:
        shapes = {(row["H"], row["B"], row["T"]) for row in runner.timed_rows(first) if row["group"] == group}
        cells = []
        for i, result in enumerate(results):
            ups = ({k: v for k, (v, _) in best[i].items()} if best else runner.speedups(result, peer, impl))
            for pass_name in runner.PASSES:
                values = [v for (g, *_, p), v in ups.items() if g == group and p == pass_name]
                if not values:
                    cells.append("")
                elif len(values) == 1:
                    cells.append(f"{values[0]:.2f}×")
                else:
                    cells.append(f"{runner.geomean(values):.2f}× ({min(values):.2f}×)")
        lines.append(f"| {group} ({len(shapes)}) | " + " | ".join(cells) + " |")
    if best:
        lines += ["", f"Per shape: speed-up of `{impl}` over the fastest peer, and that peer.", "",
                  "| group | H, B, T |" + "".join(f" forward, {column(r)} | fwd+bwd, {column(r)} |" for r in results),
                  "|---|---|" + "---|---|" * len(results)]
        for shape in dict.fromkeys(k[:4] for b in best for k in b):
            cells = [f"{b[key][0]:.2f}× {b[key][1]}" if (key := shape + (p,)) in b else ""
                     for b in best for p in runner.PASSES]
            lines.append(f"| {shape[0]} | {shape[1]}, {shape[2]}, {shape[3]} | " + " | ".join(cells) + " |")
    target_lines = getattr(module, "target_lines", None)
    if target_lines is not None:
        lines += ["", *target_lines(results)]
    contended_lines = getattr(module, "contended_lines", None)
    if contended and contended_lines is not None and contended is not results:
        lines += ["", "Beside a CPU-burning process (`--contended`):", *[line for r in contended
                                                                         for line in contended_lines(r)]]
        results = results + contended
    lines += ["", "Measured on:"]
    for result in results:
        run = result.get("run", {})
        load = (run.get("load_before") or [float("nan")])[0]
        machine = result.get("machine", {})
        where = (f"torch {machine.get('torch', '?')}, cuDNN {machine.get('cudnn', '?')}" if machine.get("device")
                 else f"{run.get('cpu', '?')}, {run.get('cpu_count', '?')} cores")
        commit = run.get("git_commit", "?")
        commit = commit[:7] + ("+dirty" if commit.endswith("+dirty") else "")
        lines.append(f"- {column(result)}: {where}; {run.get('started_utc', '?')}, commit {commit}, "
                     f"1-minute load average {load:.1f} before the run "
                     f"(full table: `{Path(result['path']).with_suffix('.md')}`).")
    return "\n".join(lines) + "\n"


def write_between_markers(path, text):
    """Replace what lies between the headline markers of the file at path with text."""
    path = Path(path)
    content = path.read_text(encoding="utf-8")
    if content.count(BEGIN) != 1 or content.count(END) != 1 or content.index(BEGIN) > content.index(END):
        raise SystemExit(f"{path}: needs one {BEGIN} line and one {END} line after it to write the headline")
    head, rest = content.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    write_atomically(path, f"{head}{BEGIN}\n{text}{END}{tail}")


def add_arguments(parser):
    """The headline command's options."""
    parser.add_argument("results", nargs="+", help="<suite>.json files, one column pair each, grouped by suite")
    parser.add_argument("--into", nargs="+", type=Path, default=list(PAGES),
                        help="files with the headline markers (default: README.md docs/perf.md)")
    parser.add_argument("--print", action="store_true", help="print the headline, write nothing")
    return parser


def main(args):
    """Render the headline of args.results; write it into args.into unless --print."""
    text = headline(load(args.results))
    if args.print:
        print(text, end="")
        return 0
    for path in args.into:
        write_between_markers(path, summary(text) if Path(path).name == "README.md" else text)
        print(path)
    return 0


def summary(text):
    """The README's short form of the headline: each suite's opening sentence and its first table (the targets,
    per-shape tables and machines stay on the docs page)."""
    kept, per_shape = [], False
    for line in text.splitlines():
        if line.startswith("|"):
            if not per_shape:
                kept.append(line)
            continue
        if line.strip():
            per_shape = line.startswith("Per shape")                             # its table stays on the docs page
        if line.startswith(("Speed-up of", "End-to-end")) or not line.strip():
            kept.append(line)
    blocks = "\n".join(kept)
    while "\n\n\n" in blocks:
        blocks = blocks.replace("\n\n\n", "\n\n")
    return blocks.strip() + "\n\nTargets, per-shape tables and each run's machine: [docs/perf.md](docs/perf.md).\n"
