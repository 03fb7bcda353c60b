"""The GPU half of the perf suite: our cupy backend against cuDNN (torch.nn.RNN/GRU/LSTM on CUDA), numba on the host.

Shapes: DeepBench's vanilla-RNN training grid (H 1760/2048/2560 × B 16/32/64/128, T 50, D = H) and
small-batch latency (B 1/4 × H 256/512/1024/2048, T 50), for each cell (rnn, gru, lstm; --cells). Per shape,
cell and pass (forward, forward+backward): median of repeats after warm-up, timed with CUDA events; TF32 off
everywhere; µs per step; speed-up over cuDNN; recurrent TFLOP/s (2·B·H·G·H·T per forward for G gates, 3× that
per forward+backward) and its fraction of the fp32 GEMM rate measured in the same run. Run through perf's
runner: ``python -m perf run --suite gpu``.
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time

from perf import runner
from perf.cpu import contract_passes, problem, torch_passes

os.environ.setdefault("CUPY_TF32", "0")  # before cupy is imported: fp32 GEMMs in full fp32

DEEPBENCH = [(h, b, 50) for h in (1760, 2048, 2560) for b in (16, 32, 64, 128)]  # (H, B, T)
LATENCY = [(h, b, 50) for b in (1, 4) for h in (256, 512, 1024, 2048)]
QUICK = [(1024, 4, 50), (2048, 32, 50), (1760, 64, 50)]
PEER = "cudnn"  # speed-ups are measured against cuDNN (perf.runner reads this)
GATES = {"rnn": 1, "gru": 3, "lstm": 4}


def shapes(quick=False, spec=None):
    """(H, B, T, group) of the grid; spec "H,B,T;H,B,T" replaces it."""
    if spec:
        return [tuple(int(v) for v in item.split(",")) + ("custom",) for item in spec.split(";") if item]
    if quick:
        return [(h, b, t, "quick") for h, b, t in QUICK]
    return [(h, b, t, "deepbench") for h, b, t in DEEPBENCH] + [(h, b, t, "latency") for h, b, t in LATENCY]


def add_arguments(parser):
    """The GPU suite's options."""
    parser.add_argument("--quick", action="store_true", help="three shapes only")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--no-numba", action="store_true", help="skip the host numba peer")
    parser.add_argument("--numba-max-flop", type=float, default=2e10,
                        help="run the numba peer only on shapes up to this many forward FLOP")
    parser.add_argument("--time-budget", type=float, default=300.0, help="seconds; later shapes are skipped")
    parser.add_argument("--shapes", default=None, help='replace the grid: "H,B,T;H,B,T"')
    parser.add_argument("--cells", default="rnn,gru,lstm", help="cells to time, comma-separated (rnn, gru, lstm)")
    parser.add_argument("--gemm-size", type=int, default=8192, help="n of the n³ GEMM ceiling")
    parser.add_argument("--torch-device", default="cuda", help=argparse.SUPPRESS)  # "cpu" in the smoke test
    return parser


def cuda_events(cupy):
    """A clock for runner.time_calls: milliseconds of one call of fn() between two CUDA events on the stream."""
    def clock(fn):
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        fn()
        end.record()
        end.synchronize()
        return cupy.cuda.get_elapsed_time(start, end)
    return clock


def gemm_rate(cupy, dtype, n=8192):
    """TFLOP/s of one n×n×n GEMM through cuBLAS (the ceiling the recurrent rates are compared with)."""
    a = cupy.random.standard_normal((n, n)).astype(dtype)
    b = cupy.random.standard_normal((n, n)).astype(dtype)
    c = cupy.empty((n, n), dtype=dtype)
    ms, _ = runner.time_calls(lambda: cupy.matmul(a, b, out=c), 2, 5, math.inf, clock=cuda_events(cupy))
    return 2 * n ** 3 / (ms * 1e-3) / 1e12


def run_suite(args):
    """Time every shape; returns {'suite': 'gpu', 'machine': ..., 'gemm_tflops': ..., 'rows': [...]}."""
    import cupy
    import torch

    import rnnbackends

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = False
    ours = rnnbackends.get_backend("cupy")
    numba = None
    if not args.no_numba:
        try:
            numba = rnnbackends.get_backend("numba")
        except rnnbackends.BackendError as exc:  # unavailable peer: reported, not fatal
            print(f"[gpu] numba peer unavailable: {exc}", file=sys.stderr)
    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    peak = gemm_rate(cupy, args.dtype, args.gemm_size)
    print(f"[gpu] {name}: cuBLAS {args.dtype} GEMM {args.gemm_size}³ = {peak:.1f} TFLOP/s (TF32 off)",
          file=sys.stderr)
    rows, started = [], time.monotonic()
    for H, B, T, group in shapes(args.quick, args.shapes):
        if time.monotonic() - started > args.time_budget:
            rows.append({"H": H, "B": B, "T": T, "group": group, "skipped": "time budget"})
            continue
        for cell in args.cells.split(","):
            rows += _time_shape(cupy, args, ours, numba, peak, H, B, T, group, cell.strip())
            cupy.get_default_memory_pool().free_all_blocks()
            torch.cuda.empty_cache()
    machine = {"device": name, "sm": f"{props['major']}{props['minor']}", "sms": props["multiProcessorCount"],
               "host": platform.node(), "cupy": cupy.__version__, "torch": torch.__version__,
               "cudnn": torch.backends.cudnn.version(), "backend": ours.info.reason if hasattr(ours, "info") else "",
               "persistent_error": getattr(ours.impl.device, "persistent_error", None)}
    return {"suite": "gpu", "peer": PEER, "primary": "cupy", "machine": machine,
            "gemm_tflops": peak, "dtype": args.dtype, "tf32": False, "warmup": args.warmup,
            "repeats": args.repeats, "rows": rows}


def cell_problem(cell, H, B, T, dtype):
    """Host inputs and output gradients of one gated-cell shape (D = H): w_x (H, G·H), w_a (H, G·H), b_a, b_r,
    a0 (and c0, d_c_n for the LSTM); PyTorch's default initialisation."""
    import numpy as np
    G = GATES[cell]
    rng = np.random.default_rng(0)
    bound = 1 / np.sqrt(H)
    arrays = {"x": rng.standard_normal((T, B, H)), "a0": rng.uniform(-0.5, 0.5, (B, H)),
              "c0": rng.uniform(-0.5, 0.5, (B, H)), "w_x": rng.uniform(-bound, bound, (H, G * H)),
              "w_a": rng.uniform(-bound, bound, (H, G * H)), "b_a": rng.uniform(-bound, bound, (G * H,)),
              "b_r": rng.uniform(-bound, bound, (G * H,)), "d_a": rng.standard_normal((T, B, H)),
              "d_a_n": rng.standard_normal((B, H)), "d_c_n": rng.standard_normal((B, H))}
    return {k: v.astype(dtype) for k, v in arrays.items()}


def cell_passes(backend, cell, p):
    """(forward, forward+backward) closures of a gated cell through the contract (cell=, b_r=, state pairs)."""
    state0 = (p["a0"], p["c0"]) if cell == "lstm" else p["a0"]
    d_state_n = (p["d_a_n"], p["d_c_n"]) if cell == "lstm" else p["d_a_n"]

    def forward():
        """Our forward through the validating handle."""
        return backend.forward_sequence(p["x"], state0, p["w_x"], p["w_a"], p["b_a"], cell=cell, b_r=p["b_r"])

    def forward_backward():
        """Our forward then backward, into every gradient."""
        _, _, saved = forward()
        return backend.backward_sequence(saved, p["d_a"], d_state_n)
    return forward, forward_backward


def torch_cell_passes(cell, p, device="cuda"):
    """(forward, forward+backward) closures of native torch.nn.GRU / nn.LSTM (cuDNN on CUDA), same weights as p."""
    import torch

    from rnnbackends.interop import to_torch_rnn_params
    D, H = p["w_x"].shape[0], p["w_a"].shape[0]
    module = (torch.nn.GRU if cell == "gru" else torch.nn.LSTM)(D, H)
    module = module.to(device=device, dtype=getattr(torch, str(p["x"].dtype)))
    params = to_torch_rnn_params(p["w_x"], p["w_a"], p["b_a"], b_r=p["b_r"])
    module.load_state_dict({k: torch.from_numpy(v) for k, v in params.items()})
    put = lambda name, *index: torch.from_numpy(p[name][index] if index else p[name]).to(device)  # noqa: E731
    x = put("x").requires_grad_()
    state0 = [put("a0", None).requires_grad_()] + ([put("c0", None).requires_grad_()] if cell == "lstm" else [])
    d_out = put("d_a")
    d_state = [put("d_a_n", None)] + ([put("d_c_n", None)] if cell == "lstm" else [])

    def run():
        return module(x, tuple(state0) if cell == "lstm" else state0[0])

    def forward():
        """torch's inference forward."""
        with torch.no_grad():
            return run()

    def forward_backward():
        """torch's forward then autograd backward into x, the initial state(s) and every weight."""
        module.zero_grad(set_to_none=True)
        for v in [x, *state0]:
            v.grad = None
        out, state_n = run()
        state_n = list(state_n) if cell == "lstm" else [state_n]
        torch.autograd.backward([out, *state_n], [d_out, *d_state])
    return forward, forward_backward


def _time_shape(cupy, args, ours, numba, peak, H, B, T, group, cell="rnn"):
    """The rows of one shape and cell (D = H): cupy and cuDNN by CUDA events, numba on the host where small enough.
    A gated cell's rows form their own group ("deepbench-gru", ...), so per-group speed-ups never mix cells."""
    G = GATES[cell]
    group = group if cell == "rnn" else f"{group}-{cell}"
    if cell == "rnn":
        host = problem(H, B, T, args.dtype)
        device = {k: cupy.asarray(v) for k, v in host.items()}
        passes = {"cupy": contract_passes(ours, device), PEER: torch_passes(host, args.torch_device)}
        host_passes = lambda: contract_passes(numba, host)  # noqa: E731
    else:
        host = cell_problem(cell, H, B, T, args.dtype)
        device = {k: cupy.asarray(v) for k, v in host.items()}
        passes = {"cupy": cell_passes(ours, cell, device), PEER: torch_cell_passes(cell, host, args.torch_device)}
        host_passes = lambda: cell_passes(numba, cell, host)  # noqa: E731
    clock = cuda_events(cupy)
    timings = {}
    for impl, fns in passes.items():
        for pass_name, fn in zip(runner.PASSES, fns):
            timings[(impl, pass_name)] = runner.time_calls(fn, args.warmup, args.repeats, math.inf, clock=clock)
    flop_fwd = 2 * B * H * G * H * T
    if (numba is not None and 2 * flop_fwd <= args.numba_max_flop   # X·W_X and the chain: 2·T·B·(D+H)·G·H
            and cell in getattr(numba, "capabilities", {"rnn"})):
        for pass_name, fn in zip(runner.PASSES, host_passes()):
            timings[("numba (host)", pass_name)] = runner.time_calls(fn, 1, 3, budget_s=0)
    path = ours.impl.path(B, H, args.dtype, cell).kind
    rows = []
    for (impl, pass_name), (ms, all_ms) in timings.items():
        tflops = flop_fwd * (1 if pass_name == "forward" else 3) / (ms * 1e-3) / 1e12
        rows.append({"H": H, "B": B, "T": T, "D": H, "cell": cell, "group": group, "dtype": args.dtype,
                     "impl": impl, "pass": pass_name, "median_ms": ms, "repeats_ms": all_ms,
                     "us_per_step": ms * 1e3 / T, "speedup_vs_cudnn": timings[(PEER, pass_name)][0] / ms,
                     "recurrent_tflops": tflops, "fraction_of_gemm": tflops / peak,
                     "path": path if impl == "cupy" else None})
    print(f"[gpu] {cell} H={H} B={B} T={T} path={path}: " + ", ".join(
        f"{i}/{p} {ms:.3f} ms" for (i, p), (ms, _) in timings.items()), file=sys.stderr)
    return rows


def markdown(result):
    """The result as a Markdown table, one row per shape and pass."""
    lines = [f"# GPU suite — {result['machine']['device']} ({result['dtype']}, TF32 off)", "",
             f"cuBLAS GEMM ceiling: {result['gemm_tflops']:.1f} TFLOP/s. Median of {result['repeats']} after "
             f"{result['warmup']} warm-up runs, CUDA events.", "",
             "| group | cell | H | B | T | pass | path | ours µs/step | cuDNN µs/step | speed-up vs cuDNN | "
             "ours TFLOP/s | of GEMM | numba (host) µs/step |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    index = {(r["H"], r["B"], r["T"], r.get("cell", "rnn"), r.get("impl"), r.get("pass")): r for r in result["rows"]}
    for r in result["rows"]:
        if r.get("skipped"):
            lines.append(f"| {r['group']} | | {r['H']} | {r['B']} | {r['T']} | — | — | skipped: {r['skipped']} "
                         f"| | | | | |")
            continue
        if r["impl"] != "cupy":
            continue
        key = (r["H"], r["B"], r["T"], r.get("cell", "rnn"))
        cudnn = index[key + ("cudnn", r["pass"])]
        nb = index.get(key + ("numba (host)", r["pass"]))
        nb = "" if nb is None else f"{nb['us_per_step']:.1f}"
        lines.append(f"| {r['group']} | {key[3]} | {r['H']} | {r['B']} | {r['T']} | {r['pass']} | {r['path']} | "
                     f"{r['us_per_step']:.1f} | {cudnn['us_per_step']:.1f} | {r['speedup_vs_cudnn']:.2f}× | "
                     f"{r['recurrent_tflops']:.2f} | {100 * r['fraction_of_gemm']:.1f}% | "
                     f"{nb} |")
    return "\n".join(lines) + "\n"
