"""The CPU half of the perf suite: every available CPU backend against native torch.nn.RNN/GRU/LSTM on the CPU.

Grid (D = H, float32, tanh): latency (B=1; H 32, 64, 256, 512; T 96, 672), training (H 128, 256, 512 ×
B 8, 32, 64 × T 64, 256), DeepBench's vanilla-RNN point scaled to this machine (H=1760, B=16, T=50), a long
sequence (H=256, B=32, T=1000), and one shape added for the forward-rate target (H=1024, B=64, T=32), kept
apart from the main grid in the targets; the gated cells on the training shapes (groups gru-training and
lstm-training, w_a (H, G·H)) against torch.nn.GRU / nn.LSTM, with their own targets. Per shape and pass
(forward, forward+backward): median wall time of repeats after warm-up, every impl timed in turn in rounds
(runner.time_interleaved), all at the same thread count; µs per step; speed-up over torch; recurrent GFLOP/s
(2·B·H·G·H·T per forward, 3× that per forward+backward, as in perf.gpu) and its fraction of the sgemm rate
measured in the same run; peak memory of our backends (NumPy allocations seen by tracemalloc) beyond what they
return, in copies of the states T·B·H.
"""
from __future__ import annotations

import collections
import functools
import importlib.metadata
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc

from perf import peers, runner
from perf.peers import torch_passes  # noqa: F401  (perf.gpu times it on CUDA)

PEER = "torch"
LATENCY = [(h, 1, t) for h in (32, 64, 256, 512) for t in (96, 672)]              # (H, B, T)
TRAINING = [(h, b, t) for h in (128, 256, 512) for b in (8, 32, 64) for t in (64, 256)]
DEEPBENCH = [(1760, 16, 50)]
LONG = [(256, 32, 1000)]
FORWARD_RATE = [(1024, 64, 32)]
QUICK = [("latency", 64, 1, 96), ("latency", 512, 1, 96), ("training", 128, 8, 64), ("training", 256, 32, 64),
         ("training", 512, 64, 64), ("deepbench", 1760, 16, 50), ("gru-training", 128, 8, 64),
         ("lstm-training", 256, 32, 64)]
SMALL_TIER = {"H_max": 256, "B_max": 32}                                           # the ≥ 3× target's shapes
TARGETS = {"small_tier": 3.0, "worst_fwd_bwd": 1.0, "forward_chain_fraction": 0.60}   # docs/perf.md
ADDED_GROUPS = ("forward-rate",)                               # outside the main grid's worst-shape target


GROUPS = {"latency": LATENCY, "training": TRAINING, "deepbench": DEEPBENCH, "long": LONG,
          "forward-rate": FORWARD_RATE, "gru-training": TRAINING, "lstm-training": TRAINING}
CELL_OF_GROUP = {"gru-training": "gru", "lstm-training": "lstm"}               # every other group: "rnn"
GATES = {"rnn": 1, "gru": 3, "lstm": 4}
PEER_TARGETS = {"forward_geomean": 1.25, "fwd_bwd_geomean": 1.5, "worst": 1.0}   # over the fastest peer per shape
CONTENDED_TARGET = 1.3      # under a CPU burner: default threads at most this much slower than one thread
CONTENDED_MIN_REPEATS = 5   # calls per setting at least: the median of 3 moved 1.33× on one burst (GRU, 1.3 s calls)
GATED_TARGETS = {"training_geomean": 1.5, "worst_fwd_bwd": 1.0}   # over torch.nn.GRU/LSTM; per step ≤ G× rnn
SMALL_B = {"B_max": 8, "fraction": 0.5}   # the chain at B ≤ 8 within 2× of the L2-resident FMA peak at its B
L2_PEAK_K, L2_PEAK_UNITS = 192, 384       # the weights per thread of that peak: 288 KiB in float32


SETTLE_S = 0.2   # seconds between two impls' timings: a peer's spin-waiting workers hold a core that long at most
ROUNDS = 3       # every impl of a shape is timed in this many rounds, in turn (runner.time_interleaved)


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
    parser.add_argument("--quick", action="store_true",
                        help="eight shapes (six simple, one GRU, one LSTM), fewer repeats (under 3 minutes)")
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
    parser.add_argument("--peers", default=",".join(peers.PEERS),
                        help="comma list of peers beside torch (default: torch,jax,onnxruntime; a peer that is not "
                             "installed is skipped and named in the results)")
    parser.add_argument("--contended", action="store_true",
                        help="run a CPU-burning process meanwhile and time our backend at --threads against one "
                             "thread (no peers): the slowdown per shape")
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


def chain_call(impl, p, cell="rnn"):
    """A closure running the forward chain method of a chain backend (rnnbackends.chain) alone on p's shape (call it
    with BLAS held as inside a call: the handle's _threads): z = X·W_X once, then each call overwrites it in place
    and the next takes that as its input (the same work: no step depends on the values)."""
    import numpy as np
    T, B, _ = p["x"].shape
    z = impl.empty((T, B, p["w_x"].shape[1]), p["x"].dtype)
    impl.matmul(p["x"].reshape(T * B, -1), p["w_x"], out=z.reshape(T * B, -1))
    steps, b_r = np.full(B, T, dtype=np.int64), p.get("b_r")
    return {"rnn": lambda: impl.rnn_forward_chain(z, p["a0"], p["w_a"], p["b_a"], steps, "tanh"),
            "gru": lambda: impl.gru_forward_chain(z, p["a0"], p["w_a"], p["b_a"], b_r, steps),
            "lstm": lambda: impl.lstm_forward_chain(z, p["a0"], p["c0"], p["w_a"], p["b_a"], b_r, steps)}[cell]


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
        return _run_contended(args) if args.contended else _run_suite(args)


def _peer_names(args):
    """({peer: version} of the requested peers that are installed, {peer: why skipped}); torch is required."""
    names = [n for n in args.peers.split(",") if n]
    unknown = sorted(set(names) - set(peers.PEERS))
    if unknown:
        raise SystemExit(f"unknown peer(s) {', '.join(unknown)}; choose from {', '.join(peers.PEERS)}")
    if peers.installed("torch") is None:
        raise SystemExit("the CPU suite times torch.nn.RNN as its peer: pip install torch")
    versions = {n: peers.installed(n) for n in dict.fromkeys([PEER, *names])}
    missing = {n: f"not installed (pip install -e '.[perf]' or pip install {' '.join(peers.DISTRIBUTIONS[n])})"
               for n, v in versions.items() if v is None}
    return {n: v for n, v in versions.items() if v is not None}, missing


def _run_suite(args):
    """Time every shape; returns the result dict perf's runner writes."""
    import numpy as np
    peer_versions, peers_missing = _peer_names(args)
    jax_threads = peers.pin_jax_threads(args.threads) if "jax" in peer_versions else None
    import torch
    names_and_backends = _backends(args.backends)
    if "numba" in names_and_backends:
        import numba
        numba.set_num_threads(args.threads)
    ceiling, ceiling_by_n = runner.sgemm_gflops(dtype=args.dtype)
    torch.set_num_threads(args.threads)
    print(f"[cpu] sgemm ceiling {ceiling:.1f} GFLOP/s ({args.threads} threads); backends "
          f"{', '.join(names_and_backends)} vs " + ", ".join(f"{n} {v}" for n, v in peer_versions.items())
          + "".join(f"; {n} skipped: {why}" for n, why in peers_missing.items()), file=sys.stderr)
    warmup, repeats, budget = _timing(args)
    rows = []
    for group, H, B, T, cell, p in _problems(args, rows):
        x_rows, projected = p["x"].reshape(T * B, H), np.empty((T * B, p["w_x"].shape[1]), dtype=args.dtype)
        input_gemm = functools.partial(np.matmul, x_rows, p["w_x"], out=projected)   # X·W_X: the non-sequential part
        work = T * B * GATES[cell] * H * H                                    # the chain's multiply-adds per forward
        busy_wait(SETTLE_S)                     # the previous shape's last peer may still spin on both cores
        input_gemm_ms, _ = runner.time_calls(input_gemm, warmup, repeats, budget)
        impls = {name: contract_passes(backend, p, cell) for name, backend in names_and_backends.items()
                 if cell in backend.capabilities}
        shape_rows, reference_errors = [], {}
        impls.update(_checked_peers(peer_versions, p, cell, args.threads, group, shape_rows, reference_errors))
        changes = []                                       # the impl timed last, for the pause between impls

        def settle(key):
            if changes[-1:] != [key[0]]:
                busy_wait(SETTLE_S)             # the previous impl's spinning thread pools (ORT, XLA, OpenMP) park
                changes.append(key[0])
        calls = {(impl, pass_name): fn for impl, fns in impls.items() for pass_name, fn in zip(runner.PASSES, fns)
                 if fn is not None}                                          # a forward-only peer has no fn for fb
        timed = runner.time_interleaved(calls, warmup, repeats, budget, ROUNDS, before=settle)
        medians = {key: ms for key, (ms, _) in timed.items()}
        for (impl, pass_name), (ms, all_ms) in timed.items():
            shape_rows.append(_row(group, H, B, T, p, impl, pass_name, ms, all_ms))
            if impl in reference_errors:
                shape_rows[-1]["reference_error"] = reference_errors[impl]
            if impl not in peers.PEERS:
                row = shape_rows[-1]
                row["peak_bytes"], row["returned_bytes"] = _peak_bytes(calls[(impl, pass_name)])
                if pass_name == "forward":                        # the chain alone: forward minus X·W_X
                    row["input_gemm_ms"] = input_gemm_ms
                    row["gflops_chain"] = 2 * work / (max(ms - input_gemm_ms, 1e-6) * 1e-3) / 1e9
                backend = names_and_backends[impl]
                path = getattr(backend.impl, "path", None)
                if path is None:
                    row["path"] = ""
                    continue
                if pass_name == "forward":          # the peer timed last may still spin: a busy core to idle_cores()
                    busy_wait(SETTLE_S)
                with backend._threads(work):                                     # as inside the call (BLAS held)
                    row["path"] = path(T, B, H) if cell == "rnn" else path(T, B, H, cell)
                    if pass_name == "forward" and B <= SMALL_B["B_max"] and impl == "numba":
                        row["chain_ms"] = runner.time_calls(chain_call(backend.impl, p, cell), warmup, repeats,
                                                            budget)[0]
                        row["gflops_chain_alone"] = 2 * work / (row["chain_ms"] * 1e-3) / 1e9
        _add_speedups(shape_rows)
        rows += shape_rows
        print(f"[cpu] {group} H={H} B={B} T={T}: " + ", ".join(
            f"{i}/{'fb' if s != 'forward' else 'f'} {ms:.2f} ms" for (i, s), ms in medians.items()),
            file=sys.stderr)
    ceiling_after, ceiling_by_n_after = runner.sgemm_gflops(dtype=args.dtype)   # the load may have changed
    ceiling = max(ceiling, ceiling_after)
    peak = fma_peak_gflops(args.threads, args.dtype)
    l2_peaks = {B: l2_fma_peak_gflops(args.threads, B, args.dtype)           # the Bs of the chains timed alone
                for B in sorted({r["B"] for r in rows if "gflops_chain_alone" in r})}
    for row in rows:
        if not row.get("skipped"):
            row["fraction_of_ceiling"] = row["gflops_recurrent"] / ceiling
            row["fraction_of_fma_peak"] = row["gflops_all"] / peak
        if "gflops_chain_alone" in row and row["B"] in l2_peaks:
            row["fraction_of_l2_peak"] = row["gflops_chain_alone"] / l2_peaks[row["B"]]
    return {"suite": "cpu", "peer": PEER, "peers": list(peer_versions), "peers_skipped": peers_missing,
            "primary": "numba" if "numba" in names_and_backends else None,
            "dtype": args.dtype, "threads": args.threads, "quick": args.quick,
            "timing": {"warmup": warmup, "max_repeats": repeats, "budget_s": budget, "statistic": "median",
                       "order": f"every impl and pass of a shape in turn, {ROUNDS} rounds"},
            "machine": _machine(args.threads, peer_versions, jax_threads),
            "sgemm_gflops": ceiling, "sgemm_gflops_by_n": {"before": ceiling_by_n, "after": ceiling_by_n_after},
            "fma_peak_gflops": peak, "l2_fma_peak_gflops": {str(B): gflops for B, gflops in l2_peaks.items()},
            "compile": None if args.quick or args.no_compile_times or "numba" not in names_and_backends
            else compile_times(),
            "rows": rows, "targets": targets(rows, ceiling)}


def _timing(args):
    """(warm-up calls, most timed calls, seconds per measurement): fewer with --quick."""
    return (1, 5, 0.5) if args.quick else (args.warmup, args.repeats, args.budget)


def _problems(args, rows):
    """(group, H, B, T, cell, problem) of each shape in turn; once --time-budget is spent, a skipped row in rows."""
    started = time.monotonic()
    for group, H, B, T in shapes(args.quick, args.groups):
        if time.monotonic() - started > args.time_budget:
            rows.append({"group": group, "H": H, "B": B, "T": T, "skipped": "time budget"})
            continue
        cell = CELL_OF_GROUP.get(group, "rnn")
        yield group, H, B, T, cell, problem(H, B, T, args.dtype, cell)


def _checked_peers(peer_versions, p, cell, threads, group, shape_rows, reference_errors):
    """{peer: passes} of every installed peer whose outputs agree with the float64 reference on p (its largest
    error into reference_errors); a peer that disagrees is not timed and gets a skipped row naming its error."""
    T, B, _ = p["x"].shape
    H = p["a0"].shape[1]
    reference = peers.reference_outputs(p, cell)
    checked = {}
    for name in peer_versions:
        fns = peers.passes(name, p, cell, threads)
        errors = peers.disagreement(peers.outputs(name, fns, cell), reference)
        worst = max(errors, key=errors.get)
        if errors[worst] > peers.TOLERANCE:
            shape_rows.append({"group": group, "cell": cell, "H": H, "B": B, "T": T, "impl": name,
                               "skipped": f"disagrees with the reference: {worst} off by {errors[worst]:.1e} of "
                                          f"its largest value (tolerance {peers.TOLERANCE:g})"})
            print(f"[cpu] {name} {cell} H={H} B={B} T={T}: {shape_rows[-1]['skipped']}", file=sys.stderr)
            continue
        checked[name], reference_errors[name] = fns, errors[worst]
    return checked


def _add_speedups(shape_rows):
    """Speed-ups of one shape's rows over torch and over the fastest peer of the same pass (its name kept)."""
    timed = [r for r in shape_rows if not r.get("skipped")]
    for pass_name in runner.PASSES:
        same = [r for r in timed if r["pass"] == pass_name]
        peer_rows = {r["impl"]: r for r in same if r["impl"] in peers.PEERS}
        best = min(peer_rows.values(), key=lambda r: r["median_ms"], default=None)
        for row in same:
            if PEER in peer_rows:
                row[f"speedup_vs_{PEER}"] = peer_rows[PEER]["median_ms"] / row["median_ms"]
                row[f"speedup_vs_{PEER}_by_min"] = peer_rows[PEER]["min_ms"] / row["min_ms"]
            if best is not None:
                row["best_peer"] = best["impl"]
                row["speedup_vs_best_peer"] = best["median_ms"] / row["median_ms"]


def busy_wait(seconds):
    """Spin this thread for that long: unlike a sleep it keeps this vCPU running, where a VM's idle vCPU made the
    next impl's first calls up to 1.8× slower (LSTM H=256, B=32, T=64, after a 0.2 s sleep)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def fma_peak_gflops(threads, dtype="float32", k=128, calls=200_000, repeats=5):
    """GFLOP/s of the numba backend's widest register tile (FMAs only, operands in L1) on ``threads`` threads at
    once: the rate no kernel on this machine can pass, so a peer's time over its FLOPs at this rate bounds the
    speed-up any implementation could reach over it. Best of ``repeats``."""
    from numba import njit, prange
    from rnnbackends_numba import kernels
    tile = kernels._tile_rows_wide

    @njit(parallel=True, nogil=True)
    def fmas(p, w_packed, out, calls):
        for part in prange(p.shape[0]):
            for _ in range(calls):
                tile(p[part], w_packed[part], out[part], 0, 0)

    p, w_packed, out, units = _tile_operands(threads, kernels.ROWS, k, kernels.VECTORS, dtype)
    fmas(p, w_packed, out, 1)                                                    # compiles
    best = min(runner.wall_ms(lambda: fmas(p, w_packed, out, calls)) for _ in range(repeats))
    return threads * calls * 2 * kernels.ROWS * k * units / (best * 1e-3) / 1e9


def l2_fma_peak_gflops(threads, rows, dtype="float32", repeats=5):
    """GFLOP/s of the chain's product (kernels._rows_times_columns: register tiles) of ``rows`` batch rows by a
    weight matrix resident in L2 (L2_PEAK_K × L2_PEAK_UNITS per thread: 288 KiB in float32, past L1, inside a
    512 KiB L2), on ``threads`` threads at once, each on its own weights: the rate a chain of ``rows`` rows would
    reach if its steps cost nothing beyond their products (the small-B chain target's reference). Best of
    ``repeats``."""
    import numpy as np
    from rnnbackends_numba import kernels
    products = _l2_products()
    lanes = kernels.VECTOR_BYTES // np.dtype(dtype).itemsize
    p, w_packed, out, units = _tile_operands(threads, rows, L2_PEAK_K, L2_PEAK_UNITS // lanes, dtype)
    lengths, calls = np.ones(rows, dtype=np.int64), 40_000 // rows
    products(p, w_packed, out, lengths, 1)                                       # compiles
    best = min(runner.wall_ms(lambda: products(p, w_packed, out, lengths, calls)) for _ in range(repeats))
    return threads * calls * 2 * rows * L2_PEAK_K * units / (best * 1e-3) / 1e9


@functools.cache
def _l2_products():
    """The njit kernel l2_fma_peak_gflops times (compiled once per process)."""
    from numba import njit, prange
    from rnnbackends_numba import kernels
    product = kernels._rows_times_columns

    @njit(parallel=True, nogil=True)
    def products(p, w_packed, out, lengths, calls):
        for part in prange(p.shape[0]):
            for _ in range(calls):
                product(p[part], w_packed[part], out[part], 0, p.shape[1], lengths, 0, 0, w_packed.shape[1])
    return products


def _tile_operands(threads, rows, k, vectors, dtype):
    """(p (threads, rows, k), w_packed (threads, vectors, k, LANES), out (threads, rows, units), units) for timing
    the tiles, one set per thread, on cache lines as the chain's arrays."""
    import numpy as np
    from rnnbackends_numba import kernels
    lanes = kernels.VECTOR_BYTES // np.dtype(dtype).itemsize
    p, w_packed = kernels.empty((threads, rows, k), dtype), kernels.empty((threads, vectors, k, lanes), dtype)
    p[...], w_packed[...] = 1e-3, 1e-3
    return p, w_packed, kernels.zeros((threads, rows, vectors * lanes), dtype), vectors * lanes


def peak_bound(rows, peer_impls, impl="numba"):
    """{(group, H, B, T, pass): the speed-up over the fastest of peer_impls that a kernel running every FLOP at the
    FMA peak would reach} for each shape where they and impl were timed (rows with fraction_of_fma_peak)."""
    fastest = {}
    for r in rows:
        if not r.get("skipped") and r["impl"] in peer_impls and "fraction_of_fma_peak" in r:
            fastest[_shape_pass(r)] = max(fastest.get(_shape_pass(r), 0.0), r["fraction_of_fma_peak"])
    ours = {_shape_pass(r) for r in rows if not r.get("skipped") and r["impl"] == impl}
    return {key: 1 / fraction for key, fraction in fastest.items() if key in ours}


# -- contended: our default threads against one thread beside a CPU-burning process ------------------

# One core's worth of pure-Python spinning, ending with the run that started it (also when that run is killed).
BURNER = "import os\nparent = os.getppid()\nwhile os.getppid() == parent:\n    pass\n"


def _run_contended(args):
    """Every shape with a CPU-burning process running: the primary backend at args.threads and at one numba thread,
    interleaved call by call, and the slowdown of the default over one thread per shape and pass."""
    import numba
    names_and_backends = _backends(args.backends or "numba")
    name = "numba" if "numba" in names_and_backends else next(iter(names_and_backends))
    backend = names_and_backends[name]
    warmup, repeats, budget = _timing(args)
    burner = start_burner()
    rows = []
    try:
        time.sleep(0.5)                                               # let the burner reach its loop
        for group, H, B, T, cell, p in _problems(args, rows):
            for pass_name, fn in zip(runner.PASSES, contract_passes(backend, p, cell)):
                (default_ms, default_all), (one_ms, one_all) = interleaved(
                    fn, (args.threads, 1), numba.set_num_threads, warmup, repeats, budget)
                default_row = _row(group, H, B, T, p, name, pass_name, default_ms, default_all)
                one_row = _row(group, H, B, T, p, f"{name}-1-thread", pass_name, one_ms, one_all)
                default_row["contended_slowdown"] = one_row["contended_slowdown"] = default_ms / one_ms
                rows += [default_row, one_row]
                print(f"[cpu contended] {group} H={H} B={B} T={T} {pass_name}: {args.threads} threads "
                      f"{default_ms:.2f} ms, 1 thread {one_ms:.2f} ms", file=sys.stderr)
    finally:
        burner.kill()
        burner.wait()
    numba.set_num_threads(args.threads)
    return {"suite": "cpu", "contended": {"burner": "one process spinning a Python loop", "target": CONTENDED_TARGET,
                                          **contended_summary(rows)},
            "peer": f"{name}-1-thread", "primary": name, "peers": [], "dtype": args.dtype, "threads": args.threads,
            "quick": args.quick,
            "timing": {"warmup": warmup, "max_repeats": repeats, "budget_s": budget, "statistic": "median",
                       "order": "default and one thread alternate call by call"},
            "machine": _machine(args.threads, {}, None), "rows": rows}


def start_burner():
    """A background process spinning one core until killed or its parent (this run) ends."""
    return subprocess.Popen([sys.executable, "-c", BURNER])


def interleaved(fn, settings, apply, warmup, repeats, budget_s, min_repeats=CONTENDED_MIN_REPEATS):
    """[(median ms, all ms)] of fn under each setting (apply(setting) before each call), alternating call by call
    (A B, B A, ...) so that a changing load and the order of calls hit every setting alike; at least min_repeats
    calls of each, whatever the budget."""
    for setting in settings:
        apply(setting)
        for _ in range(warmup):
            fn()
    times = [[] for _ in settings]
    started = time.perf_counter()
    while len(times[0]) < repeats and (len(times[0]) < min_repeats
                                       or time.perf_counter() - started < budget_s * len(settings)):
        order = list(zip(settings, times))
        for setting, kept in order if len(times[0]) % 2 == 0 else order[::-1]:   # A B, then B A: no order bias
            apply(setting)
            kept.append(runner.wall_ms(fn))
    return [(statistics.median(t), t) for t in times]


def contended_summary(rows):
    """Geometric mean and worst slowdown of the default threads over one thread, per pass."""
    out = {}
    for pass_name in runner.PASSES:
        mine = [r for r in rows if not r.get("skipped") and r["pass"] == pass_name
                and not r["impl"].endswith("-1-thread")]
        if mine:
            worst = max(mine, key=lambda r: r["contended_slowdown"])
            out[pass_name] = {"slowdown_geomean": runner.geomean(r["contended_slowdown"] for r in mine),
                              "slowdown_worst": worst["contended_slowdown"],
                              "worst_shape": f"{worst['group']} H={worst['H']} B={worst['B']} T={worst['T']}"}
    return out


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


def _machine(threads, peer_versions, jax_threads):
    """Versions and thread counts of everything timed."""
    import numpy as np
    info = {"numpy": np.__version__, "threads": threads, "blas": _blas_name()}
    if hasattr(os, "sched_getaffinity"):
        info["cpu_affinity"] = sorted(os.sched_getaffinity(0))           # python -m perf pins --threads N here
    if "torch" in peer_versions:
        import torch
        info.update(torch=torch.__version__, torch_threads=torch.get_num_threads())
    if "jax" in peer_versions:
        info.update(jax=peer_versions["jax"], jax_threads=jax_threads, xla_flags=os.environ.get("XLA_FLAGS", ""))
    if "onnxruntime" in peer_versions:
        info.update(onnxruntime=peer_versions["onnxruntime"], onnx=importlib.metadata.version("onnx"),
                    onnxruntime_threads={"intra_op": threads, "inter_op": 1})
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
        with backend._threads(T * B * H * H):                  # the path as inside a call (BLAS held)
            path = backend.impl.path(T, B, H)
        out[f"{label}_{dtype}"] = {"first_call_s": calls[0], "second_call_s": calls[1], "path": path}
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
    gated, best_peer, small_b = gated_targets(rows, impl), best_peer_targets(rows, impl), small_b_targets(rows, impl)
    ours = [r for r in rows if not r.get("skipped") and r["impl"] == impl and r["group"] not in CELL_OF_GROUP]
    if not ours:
        return {k: v for k, v in (("gated", gated), ("best_peer", best_peer), ("small_b_chain", small_b)) if v}
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
        "best_peer": best_peer,
        "small_b_chain": small_b,
    }


def small_b_targets(rows, impl="numba"):
    """Over the forward shapes with B ≤ SMALL_B["B_max"] (every cell): the chain's rate as a fraction of the
    L2-resident FMA peak at the same B (rows' fraction_of_l2_peak), worst (and its shape), median and how many reach
    SMALL_B["fraction"]; {} where none was measured."""
    ups = [r for r in rows if not r.get("skipped") and r["impl"] == impl and "fraction_of_l2_peak" in r]
    if not ups:
        return {}
    worst = min(ups, key=lambda r: r["fraction_of_l2_peak"])
    return {"worst": worst["fraction_of_l2_peak"], "worst_shape": _shape_name(worst),
            "median": statistics.median(r["fraction_of_l2_peak"] for r in ups), "shapes": len(ups),
            "reached": sum(r["fraction_of_l2_peak"] >= SMALL_B["fraction"] for r in ups)}


def small_b_lines(small_b, l2_peaks):
    """Markdown bullet of the small-B chain target."""
    peaks = ", ".join(f"B={B}: {gflops:.0f}" for B, gflops in l2_peaks.items())
    return [f"- the chain at B ≤ {SMALL_B['B_max']} (its method timed alone, every cell) over the "
            f"L2-resident FMA peak at the same B ({peaks} GFLOP/s: the tiles' product of B rows by "
            f"{L2_PEAK_K}×{L2_PEAK_UNITS} weights per thread, all threads): worst **{small_b['worst']:.0%}** at "
            f"{small_b['worst_shape']} (target ≥ {SMALL_B['fraction']:.0%}, within 2×), median "
            f"{small_b['median']:.0%}; ≥ {SMALL_B['fraction']:.0%} on {small_b['reached']} of {small_b['shapes']}"]


def best_peer_targets(rows, impl="numba"):
    """Per pass, over every shape (all cells): the speed-up over the fastest peer of each shape, geometric mean and
    worst (its shape and that peer), and how often each peer was the fastest."""
    out, bound = {}, peak_bound(rows, peers.PEERS, impl)
    for pass_name, label in (("forward", "fwd"), ("forward+backward", "fwd_bwd")):
        ups = [r for r in rows if not r.get("skipped") and r["impl"] == impl and r["pass"] == pass_name
               and "speedup_vs_best_peer" in r]
        if ups:
            worst = min(ups, key=lambda r: r["speedup_vs_best_peer"])
            out[label] = {"geomean": runner.geomean(r["speedup_vs_best_peer"] for r in ups),
                          "worst": worst["speedup_vs_best_peer"], "worst_shape": _shape_name(worst),
                          "worst_peer": worst["best_peer"], "shapes": len(ups),
                          "at_least_1x": sum(r["speedup_vs_best_peer"] >= 1 for r in ups),
                          "fastest_peer_count": dict(collections.Counter(r["best_peer"] for r in ups)),
                          **_bound_summary(bound, ups)}
    return out


def _bound_summary(bound, ups):
    """The peak bound (peak_bound) over the shapes of rows ups: geometric mean, and the shapes where even a kernel
    at the FMA peak would stay under 1× (empty without a measured peak)."""
    shapes = {_shape_name(r): bound[_shape_pass(r)] for r in ups if _shape_pass(r) in bound}
    if not shapes:
        return {}
    return {"peak_bound_geomean": runner.geomean(shapes.values()),
            "peak_bound_under_1x": {name: b for name, b in shapes.items() if b < 1}}


def _shape_pass(row):
    """(group, H, B, T, pass) of a row: one shape's one pass."""
    return row["group"], row["H"], row["B"], row["T"], row["pass"]


def _shape_name(row):
    """'group H=.. B=.. T=..' of a row."""
    return f"{row['group']} H={row['H']} B={row['B']} T={row['T']}"


def best_peer_lines(best_peer):
    """Markdown bullets of the speed-ups over the fastest peer."""
    lines = []
    for label, name, target in (("fwd", "forward", PEER_TARGETS["forward_geomean"]),
                                ("fwd_bwd", "forward+backward", PEER_TARGETS["fwd_bwd_geomean"])):
        t = best_peer.get(label)
        if t:
            counts = ", ".join(f"{peer} {n}" for peer, n in sorted(t["fastest_peer_count"].items()))
            lines.append(f"- {name} over the fastest peer of each shape ({t['shapes']} shapes; fastest peer: "
                         f"{counts}): geometric mean **{t['geomean']:.2f}×** (target ≥ {target:g}×), worst "
                         f"**{t['worst']:.2f}×** at {t['worst_shape']} against {t['worst_peer']} (target ≥ "
                         f"{PEER_TARGETS['worst']:g}×); ≥ 1× on {t['at_least_1x']} of {t['shapes']}"
                         + _bound_text(t, ""))
    return lines


def _bound_text(t, prefix, passes=""):
    """'; at the FMA peak ...' (of ``passes``, when named) of a target dict holding a _bound_summary under prefix
    ('' without one)."""
    if f"{prefix}peak_bound_geomean" not in t:
        return ""
    under = t[f"{prefix}peak_bound_under_1x"]
    return (f"; a kernel running every FLOP at the FMA peak would reach{passes} "
            f"{t[f'{prefix}peak_bound_geomean']:.2f}× "
            f"(geometric mean)" + (f" and stay under 1× on {len(under)} shape{'s' * (len(under) != 1)} ("
                                   + ", ".join(f"{name}: {b:.2f}×" for name, b in under.items()) + ")"
                                   if under else ""))


def gated_targets(rows, impl="numba"):
    """Per gated cell: speed-up over torch's GRU/LSTM (geometric mean, worst) and its per-step cost over the simple
    cell's at the same H, B, T (target ≤ G, the G× larger work), where both were timed in this run."""
    key = f"speedup_vs_{PEER}"
    timed = {_shape_pass(r): r for r in rows
             if not r.get("skipped") and r["impl"] == impl}
    out, bound = {}, peak_bound(rows, {PEER}, impl)
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
            result.update({f"{label}_{name}": value for name, value in _bound_summary(bound, ups).items()})
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
                     f"{t['fwd_geomean_speedup']:.2f}× (worst {t['fwd_worst_speedup']:.2f}×)"
                     + _bound_text(t, "fwd_bwd_", ", forward+backward,"))
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
    if result.get("contended"):
        return contended_markdown(result)
    run, m, key = result.get("run", {}), result["machine"], f"speedup_vs_{PEER}"
    rows = runner.timed_rows(result)
    impls = list(dict.fromkeys(r["impl"] for r in rows if r["impl"] not in peers.PEERS))
    timed_peers = list(dict.fromkeys(r["impl"] for r in rows if r["impl"] in peers.PEERS))
    peer_text = ", ".join(f"{n} {m.get(n, '?')}" for n in timed_peers if n != PEER)
    lines = [f"# CPU suite — {run.get('cpu', '')}, {result['threads']} threads, {result['dtype']}", "",
             f"{run.get('started_utc', '')}, commit {run.get('git_commit', '')[:12]}; numpy {m['numpy']} "
             f"({m['blas']}), numba {m.get('numba', '-')} ({m.get('numba_threading_layer', '')}), torch "
             f"{m.get('torch', '-')} ({m.get('torch_threads', '-')} threads)" + (f", {peer_text}" if peer_text else "")
             + (f" (JAX threads: {m['jax_threads']})" if "jax_threads" in m else "")
             + "".join(f"; {n} skipped: {why}" for n, why in result.get("peers_skipped", {}).items())
             + f". sgemm ceiling {result['sgemm_gflops']:.0f} GFLOP/s "
             f"(fastest of 10 square GEMMs, before and after the grid)"
             + (f"; FMA peak {result['fma_peak_gflops']:.0f} GFLOP/s (a register tile of FMAs on operands in L1, "
                f"all threads)" if result.get("fma_peak_gflops") else "") + ". "
             f"Median of up to {result['timing']['max_repeats']} calls after {result['timing']['warmup']} "
             f"warm-up. Load average (1/5/15 min) before {_load(run.get('load_before'))}, after "
             f"{_load(run.get('load_after'))}: other processes shared this machine, so treat single "
             f"shapes with care. Every peer's outputs (and gradients, where it has a backward) were checked "
             f"against the float64 NumPy reference before it was timed (tolerance {peers.TOLERANCE:g} of the "
             f"largest value).", ""]
    if any("speedup_vs_best_peer" in r for r in rows):
        lines += [f"## Headline: speed-up over the fastest peer of each shape ({', '.join(timed_peers)}; "
                  "forward+backward: the peers with a backward), geometric mean per group", ""]
        lines += _group_table(rows, impls, "speedup_vs_best_peer")
    lines += ["", "## Speed-up over torch.nn.RNN/GRU/LSTM (geometric mean per group)", ""]
    lines += _group_table(rows, impls, key)
    t = result.get("targets") or {}
    if t.get("best_peer"):
        lines += ["", "## Targets over the fastest peer (numba)", ""] + best_peer_lines(t["best_peer"])
    if t.get("gated"):
        lines += ["", "## Targets of the gated cells (numba)", ""] + gated_target_lines(t["gated"])
    if t.get("small_b_chain"):
        lines += ["", "## Target of the small-B chain (numba)", ""] + small_b_lines(
            t["small_b_chain"], result.get("l2_fma_peak_gflops", {}))
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
    others = [n for n in timed_peers if n != PEER]
    lines += ["", "## Every shape", "",
              "| group | H | B | T | pass | torch ms | " + "".join(f"{n} ms | " for n in others)
              + "fastest peer | its share of the FMA peak | "
              + " | ".join(f"{i} ms | {i} µs/step | {i} over torch | {i} over fastest peer" for i in impls)
              + " | numba rec. GFLOP/s | of sgemm | numba working / states | numba path |",
              "|---|---|---|---|---|---|" + "---|" * len(others) + "---|---|" + "---|---|---|---|" * len(impls)
              + "---|---|---|---|"]
    index = {(r["group"], r["H"], r["B"], r["T"], r["pass"], r["impl"]): r for r in rows}
    for shape in dict.fromkeys(_shape_pass(r) for r in rows):
        peer_ms = [f"{index[shape + (n,)]['median_ms']:.2f}" if shape + (n,) in index else "–"
                   for n in [PEER, *others]]
        cells = []
        for impl in impls:
            o = index.get(shape + (impl,))
            cells.append(f"{o['median_ms']:.2f} | {o['us_per_step']:.1f} | {_times(o, key)} | "
                         f"{_times(o, 'speedup_vs_best_peer')}" if o else " | | | ")
        nb = index.get(shape + ("numba",))
        fastest = next((r["best_peer"] for r in (index.get(shape + (i,)) for i in [*impls, *timed_peers])
                        if r and "best_peer" in r), "")
        extra = (f"{nb['gflops_recurrent']:.1f} | {nb['fraction_of_ceiling']:.0%} | "
                 f"{_working(nb):.2f} | {nb.get('path', '')}" if nb else " | | | ")
        share = (index.get(shape + (fastest,)) or {}).get("fraction_of_fma_peak")
        lines.append(f"| {' | '.join(map(str, shape))} | " + " | ".join(peer_ms) + f" | "
                     f"{fastest} | {'' if share is None else format(share, '.0%')} | " + " | ".join(cells)
                     + f" | {extra} |")
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
    if any(t.get("small_b_chain") for t in ts):
        lines.append(f"- the chain at B ≤ {SMALL_B['B_max']} over the L2-resident FMA peak at the same B, worst shape: "
                     + measured([t.get("small_b_chain", {}).get("worst") for t in ts], ".0%", SMALL_B["fraction"]))
    for label, name, goal in (("fwd", "forward", "forward_geomean"),
                              ("fwd_bwd", "forward+backward", "fwd_bwd_geomean")):
        best = [t.get("best_peer", {}).get(label) or {} for t in ts]
        if any(best):
            lines.append(f"- {name} over the fastest peer of each shape: geometric mean "
                         + measured([b.get("geomean") for b in best], ".2f", PEER_TARGETS[goal]) + ", worst "
                         + measured([b.get("worst") for b in best], ".2f", PEER_TARGETS["worst"]) + "; worst at "
                         + "; ".join(f"{b['worst_shape']} against {b['worst_peer']} ({lab})"
                                     for lab, b in zip(labels, best) if b) + _bound_measured(best, "", measured))
    for cell in dict.fromkeys(cell for t in ts for cell in t.get("gated", {})):
        gated = [t.get("gated", {}).get(cell, {}) for t in ts]
        lines.append(f"- {cell.upper()} over torch.nn.{cell.upper()}, forward+backward on the training shapes: "
                     "geometric mean " + measured([g.get("fwd_bwd_geomean_speedup") for g in gated], ".2f",
                                                  GATED_TARGETS["training_geomean"])
                     + ", worst " + measured([g.get("fwd_bwd_worst_speedup") for g in gated], ".2f",
                                             GATED_TARGETS["worst_fwd_bwd"])
                     + _bound_measured(gated, "fwd_bwd_", measured))
    return lines if len(lines) > 1 else []


def _bound_measured(targets, prefix, measured):
    """'; at the FMA peak at most ...' for target_lines, from each run's _bound_summary ('' where none has one)."""
    bounds = [t.get(f"{prefix}peak_bound_geomean") for t in targets]
    if not any(bounds):
        return ""
    under = max(len(t.get(f"{prefix}peak_bound_under_1x", {})) for t in targets)
    return ("; a kernel at the FMA peak would reach " + measured(bounds, ".2f")
            + (f" and stay under 1× on up to {under} shapes" if under else ""))


def _times(row, key):
    """A row's speed-up as 'N.NN×' ('' when it has none)."""
    return f"{row[key]:.2f}×" if key in row else ""


def _group_table(rows, impls, key):
    """Markdown lines: per group, the geometric mean (and least) of key for each impl and pass."""
    lines = ["| group | shapes | " + " | ".join(f"{i} forward | {i} fwd+bwd" for i in impls) + " |",
             "|---|---|" + "---|---|" * len(impls)]
    for group in dict.fromkeys(r["group"] for r in rows):
        cells = []
        for impl in impls:
            for pass_name in runner.PASSES:
                ups = [r[key] for r in rows if r["group"] == group and r["impl"] == impl and r["pass"] == pass_name
                       and key in r]
                cells.append(f"{runner.geomean(ups):.2f}× (min {min(ups):.2f}×)" if ups else "")
        n = len({(r["H"], r["B"], r["T"]) for r in rows if r["group"] == group})
        lines.append(f"| {group} | {n} | " + " | ".join(cells) + " |")
    return lines


def contended_markdown(result):
    """The contended run's table: our default threads and one thread beside a CPU burner, per shape."""
    run, c = result.get("run", {}), result["contended"]
    primary = result["primary"]
    lines = [f"# CPU suite, contended — {run.get('cpu', '')}, {result['threads']} threads against 1, "
             f"{result['dtype']}", "",
             f"{run.get('started_utc', '')}, commit {run.get('git_commit', '')[:12]}. Beside {c['burner']}, "
             f"{primary} at {result['threads']} threads and at one numba thread (numba.set_num_threads), calls "
             f"alternating, median of up to {result['timing']['max_repeats']}; NumPy's BLAS on one thread inside "
             f"each call. Load average before {_load(run.get('load_before'))}, after "
             f"{_load(run.get('load_after'))}.", "", *contended_lines(result), "",
             f"| group | H | B | T | pass | {result['threads']} threads ms | 1 thread ms | slowdown |",
             "|---|---|---|---|---|---|---|---|"]
    index = {(r["group"], r["H"], r["B"], r["T"], r["pass"], r["impl"]): r for r in runner.timed_rows(result)}
    for (group, H, B, T, pass_name, impl), r in index.items():
        one = index.get((group, H, B, T, pass_name, f"{impl}-1-thread"))
        if one:
            lines.append(f"| {group} | {H} | {B} | {T} | {pass_name} | {r['median_ms']:.2f} | "
                         f"{one['median_ms']:.2f} | {r['contended_slowdown']:.2f}× |")
    return "\n".join(lines) + "\n"


def contended_lines(result):
    """Markdown bullets: slowdown of the default threads over one thread beside a CPU burner, per pass."""
    c = result["contended"]
    return [f"- contended ({c['burner']}), {name}: default threads ({result['threads']}) over one thread, "
            f"geometric mean **{s['slowdown_geomean']:.2f}×**, worst **{s['slowdown_worst']:.2f}×** at "
            f"{s['worst_shape']} (target ≤ {c['target']:g}×: "
            f"{'met' if s['slowdown_worst'] <= c['target'] else 'missed'})"
            for name, s in c.items() if name in runner.PASSES]


def _working(row):
    """Peak allocation beyond the returned arrays, in copies of the states T·B·H."""
    return (row["peak_bytes"] - row["returned_bytes"]) / row["state_bytes"]


def _load(values):
    return "/".join(f"{v:.2f}" for v in values) if values else "n/a"
