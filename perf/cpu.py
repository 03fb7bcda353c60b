"""The CPU half of the perf suite: every available CPU backend against native torch.nn.RNN/GRU/LSTM on the CPU.

Grid (D = H, float32, tanh): latency (B=1; H 32, 64, 256, 512; T 96, 672), training (H 128, 256, 512 ×
B 8, 32, 64 × T 64, 256), DeepBench's vanilla-RNN point scaled to this machine (H=1760, B=16, T=50), a long
sequence (H=256, B=32, T=1000), and one shape added for the forward-rate target (H=1024, B=64, T=32), kept
apart from the main grid in the targets; the gated cells on the training shapes (groups gru-training and
lstm-training, w_a (H, G·H)) against torch.nn.GRU / nn.LSTM, with their own targets. Per shape and pass
(forward, forward+backward): median wall time of repeats after warm-up, all at the same thread count; µs per
step; speed-up over torch; recurrent GFLOP/s (2·B·H·G·H·T per forward, 3× that per forward+backward, as in
perf.gpu) and its fraction of the sgemm rate measured in the same run; peak memory of our backends (NumPy
allocations seen by tracemalloc) beyond what they return, in copies of the states T·B·H.
"""
from __future__ import annotations

import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc

from perf import runner

PEER = "torch"
LATENCY = [(h, 1, t) for h in (32, 64, 256, 512) for t in (96, 672)]              # (H, B, T)
TRAINING = [(h, b, t) for h in (128, 256, 512) for b in (8, 32, 64) for t in (64, 256)]
DEEPBENCH = [(1760, 16, 50)]
LONG = [(256, 32, 1000)]
FORWARD_RATE = [(1024, 64, 32)]
QUICK = [("latency", 64, 1, 96), ("latency", 512, 1, 96), ("training", 128, 8, 64), ("training", 256, 32, 64),
         ("training", 512, 64, 64), ("deepbench", 1760, 16, 50)]
SMALL_TIER = {"H_max": 256, "B_max": 32}                                           # the ≥ 3× target's shapes
TARGETS = {"small_tier": 3.0, "worst_fwd_bwd": 1.0, "forward_chain_fraction": 0.60}   # docs/perf.md
ADDED_GROUPS = ("forward-rate",)                               # outside the main grid's worst-shape target


GROUPS = {"latency": LATENCY, "training": TRAINING, "deepbench": DEEPBENCH, "long": LONG,
          "forward-rate": FORWARD_RATE, "gru-training": TRAINING, "lstm-training": TRAINING}
CELL_OF_GROUP = {"gru-training": "gru", "lstm-training": "lstm"}               # every other group: "rnn"
GATES = {"rnn": 1, "gru": 3, "lstm": 4}
GATED_TARGETS = {"training_geomean": 1.5, "worst_fwd_bwd": 1.0}   # over torch.nn.GRU/LSTM; per step ≤ G× rnn


def shapes(quick=False, groups=""):
    """(group, H, B, T) of the grid, of its --quick subset, or of the named groups (a comma list)."""
    if quick:
        return list(QUICK)
    names = [g for g in groups.split(",") if g] or list(GROUPS)
    unknown = sorted(set(names) - set(GROUPS))
    if unknown:
        raise SystemExit(f"unknown group(s) {', '.join(unknown)}; choose from {', '.join(GROUPS)}")
    return [(name, h, b, t) for name in names for h, b, t in GROUPS[name]]


def add_arguments(parser):
    """The CPU suite's options."""
    parser.add_argument("--quick", action="store_true", help="six shapes, fewer repeats (under 2 minutes)")
    parser.add_argument("--groups", default="", help=f"comma list of grid groups ({', '.join(GROUPS)}); "
                        "default: the whole grid")
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="threads for every impl: BLAS, OpenMP, numba and torch (default: all cores)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15, help="at most this many timed calls")
    parser.add_argument("--budget", type=float, default=1.5, help="seconds of timed calls per measurement")
    parser.add_argument("--backends", default="", help="comma list (default: every available CPU backend)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--time-budget", type=float, default=3600.0, help="seconds; later shapes are skipped")
    parser.add_argument("--no-compile-times", action="store_true",
                        help="skip the numba compile-time probe (always skipped with --quick)")
    return parser


def _backends(names):
    """{name: handle} of the requested, or every available, CPU backend."""
    import rnnbackends
    if names:
        return {n: rnnbackends.get_backend(n) for n in names.split(",")}
    return {i.name: rnnbackends.get_backend(i.name) for i in rnnbackends.list_backends()
            if i.available and i.spec is not None and i.spec.device == "cpu"}


def problem(H, B, T, dtype, cell="rnn"):
    """Host inputs and output gradients of one shape (D = H), PyTorch's default initialisation; a gated cell's
    weights hold its G gates side by side (w_x (D, G·H), w_a (H, G·H)) and add b_r (and c0, d_c_n for LSTM)."""
    import numpy as np
    G = GATES[cell]
    rng = np.random.default_rng(0)
    bound = 1 / np.sqrt(H)
    arrays = {"x": rng.standard_normal((T, B, H)), "a0": rng.uniform(-0.5, 0.5, (B, H)),
              "w_x": rng.uniform(-bound, bound, (H, G * H)), "w_a": rng.uniform(-bound, bound, (H, G * H)),
              "b_a": rng.uniform(-bound, bound, (G * H,)), "d_a": rng.standard_normal((T, B, H)),
              "d_a_n": rng.standard_normal((B, H))}
    if cell != "rnn":
        arrays["b_r"] = rng.uniform(-bound, bound, (G * H,))
    if cell == "lstm":
        arrays["c0"], arrays["d_c_n"] = rng.uniform(-0.5, 0.5, (B, H)), rng.standard_normal((B, H))
    return {k: v.astype(dtype) for k, v in arrays.items()}


def contract_passes(backend, p, cell="rnn"):
    """(forward, forward+backward) closures through the contract, on the arrays of p (host or device)."""
    state0 = (p["a0"], p["c0"]) if cell == "lstm" else p["a0"]
    d_state_n = (p["d_a_n"], p["d_c_n"]) if cell == "lstm" else p["d_a_n"]
    args = [p["x"], state0] + [p[k] for k in ("w_x", "w_a", "b_a")]
    options = {} if cell == "rnn" else {"cell": cell, "b_r": p["b_r"]}

    def forward():
        """Our forward through the validating handle."""
        return backend.forward_sequence(*args, **options)

    def forward_backward():
        """Our forward then backward, into every gradient."""
        _, _, saved = backend.forward_sequence(*args, **options)
        return backend.backward_sequence(saved, p["d_a"], d_state_n)
    return forward, forward_backward


def torch_passes(p, device="cpu", cell="rnn"):
    """(forward, forward+backward) closures of native torch.nn.RNN/GRU/LSTM on device, same weights and gradients
    as p (PyTorch's CPU LSTM runs through oneDNN where it can)."""
    import torch
    D, H = p["x"].shape[2], p["a0"].shape[1]
    module = {"rnn": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[cell](D, H)
    module = module.to(device=device, dtype=getattr(torch, str(p["x"].dtype)))
    b_r = p.get("b_r", 0 * p["b_a"])                                           # the simple cell: b_A holds it all
    params = {"weight_ih_l0": p["w_x"].T, "weight_hh_l0": p["w_a"].T, "bias_ih_l0": p["b_a"], "bias_hh_l0": b_r}
    module.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in params.items()})
    x = torch.from_numpy(p["x"]).to(device).requires_grad_()
    states = [torch.from_numpy(p[k][None]).to(device).requires_grad_() for k in ("a0", "c0") if k in p]
    d_out = torch.from_numpy(p["d_a"]).to(device)
    d_states = [torch.from_numpy(p[k][None]).to(device) for k in ("d_a_n", "d_c_n") if k in p]
    state0 = tuple(states) if cell == "lstm" else states[0]

    def forward():
        """torch's inference forward."""
        with torch.no_grad():
            return module(x, state0)

    def forward_backward():
        """torch's forward then autograd backward into x, the initial states and every weight."""
        module.zero_grad(set_to_none=True)
        x.grad = None
        for s in states:
            s.grad = None
        out, state_n = module(x, state0)
        state_n = list(state_n) if cell == "lstm" else [state_n]
        torch.autograd.backward([out] + state_n, [d_out] + d_states)
    return forward, forward_backward


def _peak_bytes(fn):
    """(peak bytes NumPy allocated in one call of fn, bytes of the arrays it returned), seen by tracemalloc."""
    tracemalloc.start()
    try:
        returned = fn()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak, sum(getattr(r, "nbytes", 0) for r in returned)


def run_suite(args):
    """Time every shape with BLAS pinned to args.threads; returns the result dict perf's runner writes."""
    from threadpoolctl import threadpool_limits
    with threadpool_limits(args.threads, user_api="blas"):    # also when NumPy was imported before --threads
        return _run_suite(args)


def _run_suite(args):
    """Time every shape; returns the result dict perf's runner writes."""
    import numpy as np
    try:
        import torch
    except ImportError:
        raise SystemExit("the CPU suite times torch.nn.RNN as its peer: pip install torch") from None
    names_and_backends = _backends(args.backends)
    if "numba" in names_and_backends:
        import numba
        numba.set_num_threads(args.threads)
    ceiling, ceiling_by_n = runner.sgemm_gflops(dtype=args.dtype)
    torch.set_num_threads(args.threads)
    print(f"[cpu] sgemm ceiling {ceiling:.1f} GFLOP/s ({args.threads} threads); backends "
          f"{', '.join(names_and_backends)} vs torch {torch.__version__}", file=sys.stderr)
    warmup, repeats, budget = (1, 5, 0.5) if args.quick else (args.warmup, args.repeats, args.budget)
    rows, started = [], time.monotonic()
    for group, H, B, T in shapes(args.quick, args.groups):
        if time.monotonic() - started > args.time_budget:
            rows.append({"group": group, "H": H, "B": B, "T": T, "skipped": "time budget"})
            continue
        cell = CELL_OF_GROUP.get(group, "rnn")
        p = problem(H, B, T, args.dtype, cell)
        x_rows, projected = p["x"].reshape(T * B, H), np.empty((T * B, p["w_x"].shape[1]), dtype=args.dtype)
        input_gemm = functools.partial(np.matmul, x_rows, p["w_x"], out=projected)   # X·W_X: the non-sequential part
        input_gemm_ms, _ = runner.time_calls(input_gemm, warmup, repeats, budget)
        impls = {name: contract_passes(backend, p, cell) for name, backend in names_and_backends.items()
                 if cell in backend.capabilities}
        impls[PEER] = torch_passes(p, cell=cell)
        medians = {}
        for impl, fns in impls.items():
            for pass_name, fn in zip(runner.PASSES, fns):
                ms, all_ms = runner.time_calls(fn, warmup, repeats, budget)
                medians[(impl, pass_name)] = ms
                rows.append(_row(group, H, B, T, p, impl, pass_name, ms, all_ms))
                if impl != PEER:
                    rows[-1]["peak_bytes"], rows[-1]["returned_bytes"] = _peak_bytes(fn)
                    if pass_name == "forward":                    # the chain alone: forward minus X·W_X
                        rows[-1]["input_gemm_ms"] = input_gemm_ms
                        rows[-1]["gflops_chain"] = (2 * B * H * GATES[cell] * H * T
                                                    / (max(ms - input_gemm_ms, 1e-6) * 1e-3) / 1e9)
                    path = getattr(names_and_backends[impl].impl, "path", lambda *a: "")
                    rows[-1]["path"] = path(T, B, H) if cell == "rnn" else path(T, B, H, cell)
        peer_rows = {r["pass"]: r for r in rows[-len(medians):] if r["impl"] == PEER}
        for row in rows[-len(medians):]:
            row[f"speedup_vs_{PEER}"] = peer_rows[row["pass"]]["median_ms"] / row["median_ms"]
            row[f"speedup_vs_{PEER}_by_min"] = peer_rows[row["pass"]]["min_ms"] / row["min_ms"]
        print(f"[cpu] {group} H={H} B={B} T={T}: " + ", ".join(
            f"{i}/{'fb' if s != 'forward' else 'f'} {ms:.2f} ms" for (i, s), ms in medians.items()),
            file=sys.stderr)
    ceiling_after, ceiling_by_n_after = runner.sgemm_gflops(dtype=args.dtype)   # the load may have changed
    ceiling = max(ceiling, ceiling_after)
    for row in rows:
        if not row.get("skipped"):
            row["fraction_of_ceiling"] = row["gflops_recurrent"] / ceiling
    return {"suite": "cpu", "peer": PEER, "primary": "numba" if "numba" in names_and_backends else None,
            "dtype": args.dtype, "threads": args.threads, "quick": args.quick,
            "timing": {"warmup": warmup, "max_repeats": repeats, "budget_s": budget, "statistic": "median"},
            "machine": _machine(args.threads),
            "sgemm_gflops": ceiling, "sgemm_gflops_by_n": {"before": ceiling_by_n, "after": ceiling_by_n_after},
            "compile": None if args.quick or args.no_compile_times or "numba" not in names_and_backends
            else compile_times(),
            "rows": rows, "targets": targets(rows, ceiling)}


def _row(group, H, B, T, p, impl, pass_name, ms, all_ms):
    """One timed row; FLOPs count the G gates of a gated cell (W_A is H × G·H)."""
    D, GH = p["x"].shape[2], p["w_a"].shape[1]
    passes = 1 if pass_name == "forward" else 3
    recurrent = passes * 2 * B * H * GH * T / (ms * 1e-3) / 1e9
    return {"group": group, "cell": CELL_OF_GROUP.get(group, "rnn"), "H": H, "B": B, "T": T, "D": D,
            "dtype": str(p["x"].dtype), "impl": impl,
            "pass": pass_name, "median_ms": ms, "min_ms": min(all_ms), "repeats_ms": all_ms,
            "us_per_step": ms * 1e3 / T,
            "gflops_recurrent": recurrent,
            "gflops_all": passes * 2 * B * (D + H) * GH * T / (ms * 1e-3) / 1e9,
            "state_bytes": T * B * H * p["x"].itemsize}


def _machine(threads):
    """Versions and thread counts of everything timed."""
    import numpy as np
    import torch
    info = {"numpy": np.__version__, "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "threads": threads, "blas": _blas_name()}
    try:
        import numba
        info.update(numba=numba.__version__, numba_threads=numba.get_num_threads(),
                    numba_threading_layer=_threading_layer())
    except ImportError:
        pass
    import rnnbackends
    info["rnnbackends"] = rnnbackends.__version__
    return info


def _blas_name():
    import numpy as np
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{blas['name']} {blas['version']}"
    except Exception:  # older NumPy: no dict mode
        return "unknown"


def _threading_layer():
    import numba
    try:
        return numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet
        return "not initialised"


# -- numba compile cost ------------------------------------------------------------------------------

_COMPILE_PROBE = r"""
import json, sys, time
import numpy as np
t0 = time.perf_counter()
import rnnbackends
out = {"import_rnnbackends_s": time.perf_counter() - t0, "numba_imported_by_import": "numba" in sys.modules}
backend = rnnbackends.get_backend("numba")
rng = np.random.default_rng(0)
for label, (T, B, H) in (("blocked", (3, 5, 8)), ("rows_split", (4096, 32, 256)), ("blas_step", (2, 4, 2048))):
    for dtype in ("float32", "float64"):
        x, a0 = rng.standard_normal((T, B, H)).astype(dtype), np.zeros((B, H), dtype)
        w = (rng.standard_normal((H, H)) / np.sqrt(H)).astype(dtype)
        calls = []
        for _ in range(2):
            t = time.perf_counter()
            a, a_n, saved = backend.forward_sequence(x, a0, w, w, a0[0])
            backend.backward_sequence(saved, np.ones_like(a))
            calls.append(time.perf_counter() - t)
        out[f"{label}_{dtype}"] = {"first_call_s": calls[0], "second_call_s": calls[1],
                                   "path": backend.impl.path(T, B, H)}
print(json.dumps(out))
"""


def compile_times():
    """Cold compile (empty numba cache) and warm first-call (cache on disk) times, each in a fresh process."""
    result = {}
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        for state in ("cold", "warm"):
            t = time.perf_counter()
            proc = subprocess.run([sys.executable, "-c", _COMPILE_PROBE], env=env, capture_output=True,
                                  text=True, timeout=900)
            if proc.returncode:
                return {"error": proc.stderr[-2000:]}
            result[state] = json.loads(proc.stdout.splitlines()[-1])
            result[state]["process_s"] = time.perf_counter() - t
    return result


# -- targets and the table ---------------------------------------------------------------------------

def targets(rows, ceiling, impl="numba"):
    """The targets, measured (docs/perf.md): small-tier geometric mean, worst shape, forward rate, memory."""
    key, by_min = f"speedup_vs_{PEER}", f"speedup_vs_{PEER}_by_min"
    gated = gated_targets(rows, impl)
    ours = [r for r in rows if not r.get("skipped") and r["impl"] == impl and r["group"] not in CELL_OF_GROUP]
    if not ours:
        return {"gated": gated} if gated else {}
    fb = [r for r in ours if r["pass"] == "forward+backward"]
    small = [r for r in fb if r["H"] <= SMALL_TIER["H_max"] and r["B"] <= SMALL_TIER["B_max"]]
    worst = min(ours, key=lambda r: r[key])
    main_grid = [r for r in fb if r["group"] not in ADDED_GROUPS] or fb       # without the added shape
    worst_fb = min(main_grid, key=lambda r: r[key])
    extra = [r for r in fb if r["group"] in ADDED_GROUPS]
    big = [r for r in ours if r["pass"] == "forward" and r["H"] >= 1024 and r["B"] >= 64]
    return {
        "small_tier_fwd_bwd_geomean_speedup": runner.geomean(r[key] for r in small),
        "small_tier_fwd_bwd_geomean_speedup_by_min": runner.geomean(r[by_min] for r in small),
        "small_tier_shapes": len(small),
        "worst_speedup": worst[key], "worst_shape": {k: worst[k] for k in ("group", "H", "B", "T", "pass")},
        "worst_fwd_bwd_speedup": worst_fb[key],
        "worst_fwd_bwd_shape": {k: worst_fb[k] for k in ("group", "H", "B", "T")},
        "worst_fwd_bwd_speedup_by_min": min(r[by_min] for r in main_grid),
        "forward_rate_shape_fwd_bwd_speedup": min((r[key] for r in extra), default=None),
        "forward_fraction_of_sgemm_H1024_B64": max((r["fraction_of_ceiling"] for r in big), default=None),
        "forward_all_flops_fraction_H1024_B64": max((r["gflops_all"] / ceiling for r in big), default=None),
        "forward_chain_fraction_H1024_B64": max((r["gflops_chain"] / ceiling for r in big), default=None),
        "working_over_states_fwd_bwd": {f"{r['group']} H={r['H']} B={r['B']} T={r['T']}": _working(r)
                                        for r in fb},
        "gated": gated,
    }


def gated_targets(rows, impl="numba"):
    """Per gated cell: speed-up over torch's GRU/LSTM (geometric mean, worst) and its per-step cost over the simple
    cell's at the same H, B, T (target ≤ G, the G× larger work), where both were timed in this run."""
    key = f"speedup_vs_{PEER}"
    timed = {(r["group"], r["H"], r["B"], r["T"], r["pass"]): r for r in rows
             if not r.get("skipped") and r["impl"] == impl}
    out = {}
    for group, cell in CELL_OF_GROUP.items():
        mine = [r for (g, *_), r in timed.items() if g == group]
        if not mine:
            continue
        result = {"cell": cell, "gates": GATES[cell], "shapes": len({(r["H"], r["B"], r["T"]) for r in mine})}
        for pass_name, label in (("forward", "fwd"), ("forward+backward", "fwd_bwd")):
            ups = [r for r in mine if r["pass"] == pass_name]
            worst = min(ups, key=lambda r: r[key])
            result[f"{label}_geomean_speedup"] = runner.geomean(r[key] for r in ups)
            result[f"{label}_worst_speedup"] = worst[key]
            result[f"{label}_worst_shape"] = f"H={worst['H']} B={worst['B']} T={worst['T']}"
            ratios = {f"H={r['H']} B={r['B']} T={r['T']}": r["median_ms"] / simple["median_ms"]
                      for r in ups if (simple := timed.get(("training", r["H"], r["B"], r["T"], pass_name)))}
            result[f"{label}_step_cost_over_rnn"] = ratios
        out[cell] = result
    return out


def gated_target_lines(gated):
    """Markdown bullets of the gated cells' targets."""
    lines = []
    for cell, t in gated.items():
        G = t["gates"]
        lines.append(f"- {cell.upper()} over torch.nn.{cell.upper()}, {t['shapes']} training shapes: forward+backward "
                     f"geometric mean **{t['fwd_bwd_geomean_speedup']:.2f}×** (target ≥ "
                     f"{GATED_TARGETS['training_geomean']:g}×), worst **{t['fwd_bwd_worst_speedup']:.2f}×** at "
                     f"{t['fwd_bwd_worst_shape']} (target ≥ {GATED_TARGETS['worst_fwd_bwd']:g}×); forward "
                     f"{t['fwd_geomean_speedup']:.2f}× (worst {t['fwd_worst_speedup']:.2f}×)")
        for label, name in (("fwd_bwd", "forward+backward"), ("fwd", "forward")):
            ratios = t[f"{label}_step_cost_over_rnn"]
            if ratios:
                worst = max(ratios, key=ratios.get)
                lines.append(f"  - {name} time per step over the simple cell's at the same H, B, T: median "
                             f"{statistics.median(ratios.values()):.2f}, max **{ratios[worst]:.2f}** at {worst} "
                             f"(target ≤ G = {G})")
    return lines


def markdown(result):
    """The CPU suite's tables: headline per group, targets, then every shape."""
    run, m, key = result.get("run", {}), result["machine"], f"speedup_vs_{PEER}"
    rows = runner.timed_rows(result)
    impls = list(dict.fromkeys(r["impl"] for r in rows if r["impl"] != PEER))
    lines = [f"# CPU suite — {run.get('cpu', '')}, {result['threads']} threads, {result['dtype']}", "",
             f"{run.get('started_utc', '')}, commit {run.get('git_commit', '')[:12]}; numpy {m['numpy']} "
             f"({m['blas']}), numba {m.get('numba', '-')} ({m.get('numba_threading_layer', '')}), torch "
             f"{m['torch']} ({m['torch_threads']} threads). sgemm ceiling {result['sgemm_gflops']:.0f} GFLOP/s "
             f"(fastest of 10 square GEMMs, before and after the grid). "
             f"Median of up to {result['timing']['max_repeats']} calls after {result['timing']['warmup']} "
             f"warm-up. Load average (1/5/15 min) before {_load(run.get('load_before'))}, after "
             f"{_load(run.get('load_after'))}: other processes shared this machine, so treat single "
             f"shapes with care.", "", "## Headline: speed-up over torch.nn.RNN (geometric mean per group)", "",
             "| group | shapes | " + " | ".join(f"{i} forward | {i} fwd+bwd" for i in impls) + " |",
             "|---|---|" + "---|---|" * len(impls)]
    for group in dict.fromkeys(r["group"] for r in rows):
        cells = []
        for impl in impls:
            for pass_name in runner.PASSES:
                ups = [r[key] for r in rows if r["group"] == group and r["impl"] == impl and r["pass"] == pass_name]
                cells.append(f"{runner.geomean(ups):.2f}× (min {min(ups):.2f}×)" if ups else "")
        n = len({(r["H"], r["B"], r["T"]) for r in rows if r["group"] == group})
        lines.append(f"| {group} | {n} | " + " | ".join(cells) + " |")
    t = result.get("targets") or {}
    if t.get("gated"):
        lines += ["", "## Targets of the gated cells (numba)", ""] + gated_target_lines(t["gated"])
    if t.get("small_tier_shapes") is not None:
        frac = t["forward_fraction_of_sgemm_H1024_B64"]
        frac_all = t["forward_all_flops_fraction_H1024_B64"]
        frac_chain = t["forward_chain_fraction_H1024_B64"]
        lines += ["", "## Targets (numba)", "",
                  f"- forward+backward speed-up, geometric mean over the {t['small_tier_shapes']} shapes with "
                  f"H ≤ 256 and B ≤ 32: " + (
                      f"**{t['small_tier_fwd_bwd_geomean_speedup']:.2f}×** (target ≥ 3×; "
                      f"{t['small_tier_fwd_bwd_geomean_speedup_by_min']:.2f}× comparing fastest calls)"
                      if t["small_tier_shapes"] else "none in this run"),
                  f"- worst forward+backward speed-up over the main grid: **{t['worst_fwd_bwd_speedup']:.2f}×** "
                  f"at {t['worst_fwd_bwd_shape']} (target ≥ 1.0×; {t['worst_fwd_bwd_speedup_by_min']:.2f}× "
                  f"comparing fastest calls)" + (
                      "" if t.get("forward_rate_shape_fwd_bwd_speedup") is None else
                      f"; at the added forward-rate shape {t['forward_rate_shape_fwd_bwd_speedup']:.2f}×") +
                  f"; worst of either pass {t['worst_speedup']:.2f}× at {t['worst_shape']}",
                  "- forward at H ≥ 1024, B ≥ 64, as fractions of sgemm (target ≥ 60 %): " + (
                      f"the chain alone (2·B·H²·T over forward time minus the X·W_X GEMM timed alone) "
                      f"**{frac_chain:.0%}**; all forward FLOPs (2·T·B·(D+H)·H) {frac_all:.0%}; recurrent "
                      f"FLOPs over the whole forward {frac:.0%}" if frac is not None else "not measured"),
                  "- forward+backward working memory (peak NumPy allocation minus the returned gradients) in "
                  "copies of the states T·B·H: median **{:.2f}×**, max {:.2f}× (A and dZ are two copies; H×H "
                  "temporaries dominate where T·B is small)".format(
                      statistics.median(t["working_over_states_fwd_bwd"].values()),
                      max(t["working_over_states_fwd_bwd"].values()))]
    comp = result.get("compile")
    if comp and "cold" in comp:
        lines += ["", "## numba compile cost (fresh process each)", "",
                  "| probe, dtype | kernel path taken | cold first call s | warm first call s (cache on disk) | "
                  "second call s |", "|---|---|---|---|---|"]
        for name, cold in comp["cold"].items():
            if isinstance(cold, dict):
                warm = comp["warm"][name]
                lines.append(f"| {name} | {cold.get('path', '')} | {cold['first_call_s']:.2f} | "
                             f"{warm['first_call_s']:.3f} | {warm['second_call_s']:.4f} |")
        lines.append(f"\n`import rnnbackends`: {comp['warm']['import_rnnbackends_s']:.2f} s, imports numba: "
                     f"{comp['warm']['numba_imported_by_import']}; whole cold process "
                     f"{comp['cold']['process_s']:.1f} s, warm {comp['warm']['process_s']:.1f} s.")
    lines += ["", "## Every shape", "",
              "| group | H | B | T | pass | torch ms | " + " | ".join(
                  f"{i} ms | {i} µs/step | {i} speed-up" for i in impls) + " | numba rec. GFLOP/s | of sgemm "
              "| numba working / states | numba path |",
              "|---|---|---|---|---|---|" + "---|---|---|" * len(impls) + "---|---|---|---|"]
    index = {(r["group"], r["H"], r["B"], r["T"], r["pass"], r["impl"]): r for r in rows}
    for r in rows:
        if r["impl"] != PEER:
            continue
        shape = (r["group"], r["H"], r["B"], r["T"], r["pass"])
        cells = []
        for impl in impls:
            o = index.get(shape + (impl,))
            cells.append(f"{o['median_ms']:.2f} | {o['us_per_step']:.1f} | {o[key]:.2f}×" if o else " | | ")
        nb = index.get(shape + ("numba",))
        extra = (f"{nb['gflops_recurrent']:.1f} | {nb['fraction_of_ceiling']:.0%} | "
                 f"{_working(nb):.2f} | {nb.get('path', '')}" if nb else " | | | ")
        lines.append(f"| {r['group']} | {r['H']} | {r['B']} | {r['T']} | {r['pass']} | {r['median_ms']:.2f} | "
                     + " | ".join(cells) + f" | {extra} |")
    skipped = [r for r in result["rows"] if r.get("skipped")]
    if skipped:
        lines += ["", "Skipped: " + ", ".join(f"{r['group']} H={r['H']} B={r['B']} T={r['T']} ({r['skipped']})"
                                              for r in skipped)]
    return "\n".join(lines) + "\n"


def target_lines(results):
    """The targets of several runs side by side (e.g. 2 threads / 1 thread), as Markdown lines for the headline."""
    ts = [r.get("targets") or {} for r in results]
    if not all(ts):
        return []
    labels = [f"{r['threads']} thread{'s' if r['threads'] != 1 else ''}" for r in results]

    def measured(values, fmt, target=None):
        text = "**" + " / ".join("n/a" if v is None else format(v, fmt) + ("" if "%" in fmt else "×")
                                 for v in values) + "**"
        if target is None:
            return text
        missed = [label for label, v in zip(labels, values) if v is not None and v < target]
        unmeasured = [label for label, v in zip(labels, values) if v is None]
        verdict = "; ".join([f"missed on {', '.join(missed)}"] * bool(missed) +
                            [f"not measured on {', '.join(unmeasured)}"] * bool(unmeasured)) or "met"
        return f"{text} (target ≥ {format(target, '.0%') if fmt.endswith('%') else f'{target:g}×'}: {verdict})"

    def simple(name, fmt, target=None):
        return measured([t.get(name) for t in ts], fmt, target)

    lines = [f"Targets ({' / '.join(labels)}):"]
    if all("small_tier_shapes" in t for t in ts):
        added = ", ".join(f"H={h}, B={b}, T={t}" for group in ADDED_GROUPS for h, b, t in GROUPS.get(group, ()))
        memory = " / ".join(f"{statistics.median(t['working_over_states_fwd_bwd'].values()):.1f}" for t in ts)
        lines += [f"- forward+backward, geometric mean over the {ts[0]['small_tier_shapes']} shapes with "
                  f"H ≤ {SMALL_TIER['H_max']} and B ≤ {SMALL_TIER['B_max']}: "
                  + simple("small_tier_fwd_bwd_geomean_speedup", ".2f", TARGETS["small_tier"]),
                  "- worst forward+backward shape of the main grid: "
                  + simple("worst_fwd_bwd_speedup", ".2f", TARGETS["worst_fwd_bwd"])
                  + (f"; at the added shape ({added}): " + simple("forward_rate_shape_fwd_bwd_speedup", ".2f")
                     if any(t.get("forward_rate_shape_fwd_bwd_speedup") is not None for t in ts) else ""),
                  "- forward at H=1024, B=64, the chain alone as a fraction of the sgemm rate measured in the same "
                  "run: " + simple("forward_chain_fraction_H1024_B64", ".0%", TARGETS["forward_chain_fraction"]),
                  f"- forward+backward working memory beyond the returned arrays: median {memory} copies of the "
                  "states (T·B·H)"]
    for cell in dict.fromkeys(cell for t in ts for cell in t.get("gated", {})):
        gated = [t.get("gated", {}).get(cell, {}) for t in ts]
        lines.append(f"- {cell.upper()} over torch.nn.{cell.upper()}, forward+backward on the training shapes: "
                     "geometric mean " + measured([g.get("fwd_bwd_geomean_speedup") for g in gated], ".2f",
                                                  GATED_TARGETS["training_geomean"])
                     + ", worst " + measured([g.get("fwd_bwd_worst_speedup") for g in gated], ".2f",
                                             GATED_TARGETS["worst_fwd_bwd"]))
    return lines if len(lines) > 1 else []


def _working(row):
    """Peak allocation beyond the returned arrays, in copies of the states T·B·H."""
    return (row["peak_bytes"] - row["returned_bytes"]) / row["state_bytes"]


def _load(values):
    return "/".join(f"{v:.2f}" for v in values) if values else "n/a"
