"""The perf suite's runner: timing, machine facts, the GEMM ceiling, JSON/Markdown/PNG output and ``compare``.

Suites live beside this file as modules ``perf.<suite>`` (``perf.cpu``, ``perf.gpu``); ``python -m perf run
--suite NAME`` imports one and needs from it only:

    add_arguments(parser)   adds the suite's own options (``--quick`` included) to the ``run`` parser;
    run_suite(args) -> dict times the grid and returns a result:
        {"suite": NAME, "machine": {...}, "rows": [row, ...], ...anything else the suite wants to keep}
        where each timed row has at least
        group, H, B, T, impl, pass ("forward" | "forward+backward"), median_ms, us_per_step
        (and, where known, D, dtype, repeats_ms, speedup_vs_<peer>, fraction_of_...), and a row that
        was not timed has group, H, B, T and "skipped": why;
    markdown(result) -> str (optional)  the suite's own table; without it ``markdown`` below is used;
    PEER = "torch" | "cudnn" (optional)  the impl that speed-ups are measured against (also read from
        result["peer"]; for "gpu" it defaults to "cudnn", for "cpu" to "torch");
    target_lines(results) -> [str] (optional)  the suite's targets, for ``python -m perf headline``.

The runner adds result["run"] (command line, UTC time, git commit, Python, load average before and after,
since other processes on a shared machine disturb timings) and writes ``<suite>.json``, ``<suite>.md`` and
``<suite>.png`` (speed-up over the peer against H, one line per B, one panel per pass) under ``--out``.
``python -m perf compare OLD.json NEW.json`` matches rows on (suite, group, H, B, T, D, dtype, impl, pass)
and flags every median that got slower by more than ``--tolerance``. Timing goes through ``time_calls``, whose
``clock`` a suite replaces to time on a device (perf.gpu: CUDA events), or ``time_interleaved`` for impls
compared on a shared machine (perf.cpu).
"""
from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from rnnbackends.files import write_atomically

DEFAULT_PEERS = {"cpu": "torch", "gpu": "cudnn"}
PASSES = ("forward", "forward+backward")
ROW_KEY = ("group", "H", "B", "T", "D", "dtype", "impl", "pass")


# -- timing and the machine ---------------------------------------------------------------------------

def wall_ms(fn):
    """Milliseconds of one call of fn() by the host's clock."""
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def time_calls(fn, warmup=2, repeats=10, budget_s=1.0, min_repeats=3, clock=wall_ms):
    """Median and all ms of fn() after warm-up, each by clock(fn) (CUDA events in perf.gpu), within budget_s."""
    for _ in range(warmup):
        fn()
    times = []
    started = time.perf_counter()
    while len(times) < repeats and (len(times) < min_repeats or time.perf_counter() - started < budget_s):
        times.append(clock(fn))
    return statistics.median(times), times


def time_interleaved(fns, warmup=2, repeats=10, budget_s=1.0, rounds=3, before=None, min_repeats=3,
                     clock=wall_ms, turn_warmup_below_ms=100.0):
    """{key: (median ms, all ms)} of each fn of the dict fns, timed in ``rounds`` rounds that each visit every fn in
    turn with its share of repeats and budget_s, so that a burst of load on a shared machine falls on every fn
    rather than on the one being timed; before(key) runs before each fn's turn (and its warm-up). A turn starts
    with one untimed call when the fn's last call took under turn_warmup_below_ms: the first call after another
    fn ran is slower (caches, and on a VM a vCPU that idled)."""
    times, last_ms = {key: [] for key in fns}, {}
    for key, fn in fns.items():
        if before:
            before(key)
        for _ in range(warmup):
            last_ms[key] = wall_ms(fn)
    for r in range(1, rounds + 1):
        most, least = -(-repeats * r // rounds), -(-min_repeats * r // rounds)   # cumulative counts by round r
        for key, fn in fns.items():
            if before:
                before(key)
            if last_ms.get(key, math.inf) < turn_warmup_below_ms:
                fn()
            kept, started = times[key], time.perf_counter()
            while len(kept) < most and (len(kept) < least or time.perf_counter() - started < budget_s / rounds):
                kept.append(clock(fn))
            last_ms[key] = kept[-1]
    return {key: (statistics.median(kept), kept) for key, kept in times.items()}


def sgemm_gflops(sizes=(1024, 2048), dtype="float32"):
    """Best GFLOP/s of square NumPy GEMMs (the BLAS our backends call): the fastest of 10 calls per size."""
    import numpy as np
    best = {}
    for n in sizes:
        a = np.random.default_rng(0).standard_normal((n, n)).astype(dtype)
        b, c = a.copy(), np.empty_like(a)
        _, all_ms = time_calls(lambda: np.matmul(a, b, out=c), warmup=2, repeats=10, budget_s=2.0)
        best[n] = 2 * n ** 3 / (min(all_ms) * 1e-3) / 1e9
    return max(best.values()), best


def cpu_model(cpuinfo=None):
    """The CPU's model name and widest x86 vector extension from /proc/cpuinfo (or its text), e.g. "AMD EPYC
    (AVX-512)": VMs of one model name come with and without AVX-512, and the peers' speed differs between them."""
    try:
        lines = (Path("/proc/cpuinfo").read_text() if cpuinfo is None else cpuinfo).splitlines()
    except OSError:
        lines = []
    fields = dict(line.split(":", 1) for line in lines if ":" in line)
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    name = fields.get("model name") or platform.processor() or platform.machine()
    flags = set(fields.get("flags", "").split())
    vectors = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else ""
    return f"{name} ({vectors})" if vectors else name


def git_commit():
    """HEAD's hash, with '+dirty' when the working tree has changes; '' outside a checkout."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True,
                               timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return head + ("+dirty" if head and dirty else "")


def load_average():
    """The 1, 5 and 15 minute load averages (None where the OS has none)."""
    try:
        return list(os.getloadavg())
    except OSError:
        return None


def run_info(argv):
    """What the runner records about this run before the suite starts."""
    return {"command": "python -m perf " + " ".join(argv), "started_utc": _utc_now(), "git_commit": git_commit(),
            "python": platform.python_version(), "platform": platform.platform(), "host": platform.node(),
            "cpu": cpu_model(), "cpu_count": os.cpu_count(), "load_before": load_average(),
            "note": "the load averages show how busy the machine was: other processes disturb timings"}


def _utc_now():
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- running a suite and writing its outputs ---------------------------------------------------------

def run(module, args, argv):
    """Run one suite module, add the run's facts and write JSON, Markdown and PNG under args.out. Under
    ``mpiexec -n K`` each rank times every K-th shape on its own device and rank 0 writes the merged result
    (perf/spread.py); the other ranks write nothing."""
    from perf import spread
    from rnnbackends import distributed
    communicator = distributed.current()
    info = run_info(argv)
    started = time.perf_counter()
    order = spread.share_grid(module, communicator)
    result = module.run_suite(args)
    info.update(finished_utc=_utc_now(), wall_s=round(time.perf_counter() - started, 1),
                load_after=load_average())
    result["run"] = info
    if communicator.size > 1:
        result = spread.merge(communicator, result, order)
    return [] if result is None else write_outputs(result, module, args.out)


def peer_of(result, module=None):
    """The impl speed-ups are measured against."""
    return result.get("peer") or getattr(module, "PEER", None) or DEFAULT_PEERS.get(result.get("suite"))


def write_outputs(result, module, out_dir):
    """<suite>.json, <suite>.md and <suite>.png under out_dir; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    suite = result.get("suite", "suite")
    paths = [out / f"{suite}.json", out / f"{suite}.md", out / f"{suite}.png"]
    write_atomically(paths[0], json.dumps(result, indent=1, default=float) + "\n")
    text = module.markdown(result) if hasattr(module, "markdown") else markdown(result, peer_of(result, module))
    if "ranks" in result:                                   # a grid spread over ranks (perf/spread.py)
        from perf.spread import ranks_markdown
        text += ranks_markdown(result)
    write_atomically(paths[1], text)
    if not plot(result, peer_of(result, module), paths[2]):
        paths.pop()
    return paths


def timed_rows(result):
    """The rows that hold a timing."""
    return [r for r in result["rows"] if not r.get("skipped")]


def speedups(result, peer, impl):
    """{(group, H, B, T, pass): peer median / impl median} for every shape both timed."""
    by_key = {}
    for r in timed_rows(result):
        by_key.setdefault((r["group"], r["H"], r["B"], r["T"], r["pass"]), {})[r["impl"]] = r["median_ms"]
    return {k: v[peer] / v[impl] for k, v in by_key.items() if peer in v and impl in v}


def primary_impl(result, peer):
    """The backend the suite is about: result["primary"], else the first impl that is not the peer."""
    if result.get("primary"):
        return result["primary"]
    return next((r["impl"] for r in timed_rows(result) if r["impl"] != peer), None)


def geomean(values):
    """Geometric mean (nan when empty)."""
    values = list(values)
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def markdown(result, peer):
    """A generic table: one line per shape, pass and impl, with the speed-up over the peer."""
    lines = [f"# {result.get('suite', '')} suite", "",
             "| group | H | B | T | pass | impl | median ms | µs/step | speed-up vs " + f"{peer} |",
             "|---|---|---|---|---|---|---|---|---|"]
    ratio = {}
    for r in timed_rows(result):
        ratio.setdefault((r["group"], r["H"], r["B"], r["T"], r["pass"]), {})[r["impl"]] = r["median_ms"]
    for r in timed_rows(result):
        times = ratio[(r["group"], r["H"], r["B"], r["T"], r["pass"])]
        up = f"{times[peer] / r['median_ms']:.2f}×" if peer in times else ""
        lines.append(f"| {r['group']} | {r['H']} | {r['B']} | {r['T']} | {r['pass']} | {r['impl']} | "
                     f"{r['median_ms']:.3f} | {r['us_per_step']:.2f} | {up} |")
    return "\n".join(lines) + "\n"


def plot(result, peer, path):
    """Speed-up of the primary impl over the peer against H, one line per B (geometric mean over T)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install -e '.[plot]')", file=sys.stderr)
        return False
    impl = primary_impl(result, peer)
    ups = speedups(result, peer, impl)
    if not ups:
        return False
    fig, axes = plt.subplots(1, len(PASSES), figsize=(6 * len(PASSES), 4.5), squeeze=False)
    for ax, pass_name in zip(axes[0], PASSES):
        per_b = {}
        for (group, H, B, T, p), up in ups.items():
            if p == pass_name:
                per_b.setdefault(B, {}).setdefault(H, []).append(up)
        for B in sorted(per_b):
            hs = sorted(per_b[B])
            ax.plot(hs, [geomean(per_b[B][h]) for h in hs], marker="o", label=f"B={B}")
        ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("H (hidden units)")
        ax.set_ylabel(f"speed-up of {impl} over {peer}")
        ax.set_title(f"{pass_name} (geometric mean over T)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    run = result.get("run", {})
    where = result.get("machine", {}).get("device") or run.get("cpu", "")
    fig.suptitle(f"{result.get('suite', '')} suite: {impl} vs {peer} — {where} ({run.get('started_utc', '')})",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# -- compare ----------------------------------------------------------------------------------------

def compare(old_paths, new_path, tolerance=None):
    """Lines describing every matched row and the number of regressions: rows of NEW slower than the old runs'
    geometric mean by more than the tolerance. Given two or more old runs, the tolerance defaults to their noise
    band (the largest ratio between two old runs' medians of one row, over the rows of the row's impl); with one,
    10 %."""
    old_paths = [old_paths] if isinstance(old_paths, (str, Path)) else list(old_paths)
    olds = [json.loads(Path(p).read_text()) for p in old_paths]
    new = json.loads(Path(new_path).read_text())
    medians = {}                                                      # row key -> [median ms of each old run]
    for old in olds:
        for r in timed_rows(old):
            medians.setdefault(_row_key(old, r), []).append(r)
    medians = {key: runs for key, runs in medians.items() if len(runs) == len(olds)}
    bands = {}                                                        # impl -> (noise band, its row)
    for key, runs in medians.items():
        times = [r["median_ms"] for r in runs]
        impl = runs[0]["impl"]
        if max(times) / min(times) > bands.get(impl, (1.0,))[0]:
            bands[impl] = (max(times) / min(times), key)
    fixed = tolerance if tolerance is not None else None if len(olds) > 1 else 0.10
    lines = ["| group | H | B | T | impl | pass | old ms | new ms | new/old | speed-up old → new | |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    regressions = 0
    for r in timed_rows(new):
        runs = medians.get(_row_key(new, r))
        if runs is None:
            continue
        before = math.prod(run["median_ms"] for run in runs) ** (1 / len(runs))   # geometric mean of the old runs
        ratio = r["median_ms"] / before
        allowed = fixed if fixed is not None else bands.get(r["impl"], (1.0,))[0] - 1     # this impl's noise
        flag = ""
        if ratio > 1 + allowed:
            flag, regressions = "REGRESSION", regressions + 1
        elif ratio < 1 / (1 + allowed):
            flag = "faster"
        up = next((k for k in r if k.startswith("speedup_vs_")), None)
        ups = f"{runs[0][up]:.2f}× → {r[up]:.2f}×" if up and up in runs[0] else ""
        lines.append(f"| {r['group']} | {r['H']} | {r['B']} | {r['T']} | {r['impl']} | {r['pass']} | "
                     f"{before:.3f} | {r['median_ms']:.3f} | {ratio:.2f} | {ups} | {flag} |")
    lines.append("")
    if len(olds) > 1:
        for impl, (band, key) in sorted(bands.items()):
            lines.append(f"Noise band of {impl} between the {len(olds)} old runs: {band:.2f}× (largest at "
                         f"{', '.join(map(str, key[1:]))}); old ms: their geometric mean.")
    limit = "each impl's noise band" if fixed is None else f"{fixed:.0%}"
    lines.append(f"{regressions} regression(s) beyond {limit}.")
    for label, result in [*((f"old {i + 1}", old) for i, old in enumerate(olds)), ("new", new)]:
        run = result.get("run", {})
        lines.append(f"{label}: {run.get('started_utc', '?')}, commit {run.get('git_commit', '?')[:12]}, "
                     f"threads {result.get('threads', '?')}, load average before {run.get('load_before')}")
    if any(old.get("threads") != new.get("threads") or old.get("run", {}).get("cpu") != new.get("run", {}).get("cpu")
           for old in olds):
        lines.append("WARNING: different thread counts or CPUs: the times are not comparable")
    return lines, regressions


def _row_key(result, row):
    return (result.get("suite"),) + tuple(row.get(k) for k in ROW_KEY)
