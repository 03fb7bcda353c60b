"""The GPU half of the perf suite: our cupy backend against cuDNN (torch.nn.RNN on CUDA), numba on the host.

Shapes: DeepBench's vanilla-RNN training grid (H 1760/2048/2560 × B 16/32/64/128, T 50, D = H) and
small-batch latency (B 1/4 × H 256/512/1024/2048, T 50). Per shape and pass (forward, forward+backward):
median of repeats after warm-up, timed with CUDA events; TF32 off everywhere; µs per step; speed-up over
cuDNN; recurrent TFLOP/s (2·B·H²·T per forward, 3× that per forward+backward) and its fraction of the
fp32 GEMM rate measured in the same run. Entry points: run_suite(args) for perf's runner
(``python -m perf run --suite gpu``) and ``python -m perf.gpu --out DIR`` on its own.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from rnnbackends.files import write_atomically

os.environ.setdefault("CUPY_TF32", "0")  # before cupy is imported: fp32 GEMMs in full fp32

DEEPBENCH = [(h, b, 50) for h in (1760, 2048, 2560) for b in (16, 32, 64, 128)]  # (H, B, T)
LATENCY = [(h, b, 50) for b in (1, 4) for h in (256, 512, 1024, 2048)]
QUICK = [(1024, 4, 50), (2048, 32, 50), (1760, 64, 50)]
PASSES = ("forward", "forward+backward")
PEER = "cudnn"  # speed-ups are measured against cuDNN (perf.runner reads this)


def shapes(quick=False, spec=None):
    """(H, B, T, group) of the grid; spec "H,B,T;H,B,T" replaces it."""
    if spec:
        return [tuple(int(v) for v in item.split(",")) + ("custom",) for item in spec.split(";") if item]
    if quick:
        return [(h, b, t, "quick") for h, b, t in QUICK]
    return [(h, b, t, "deepbench") for h, b, t in DEEPBENCH] + [(h, b, t, "latency") for h, b, t in LATENCY]


def add_arguments(parser):
    """The GPU suite's options (shared by perf's runner and this module's own CLI)."""
    parser.add_argument("--quick", action="store_true", help="three shapes only")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--no-numba", action="store_true", help="skip the host numba peer")
    parser.add_argument("--numba-max-flop", type=float, default=2e10,
                        help="run the numba peer only on shapes up to this many forward FLOP")
    parser.add_argument("--time-budget", type=float, default=300.0, help="seconds; later shapes are skipped")
    parser.add_argument("--shapes", default=None, help='replace the grid: "H,B,T;H,B,T"')
    parser.add_argument("--gemm-size", type=int, default=8192, help="n of the n³ GEMM ceiling")
    parser.add_argument("--torch-device", default="cuda", help=argparse.SUPPRESS)  # "cpu" in the smoke test
    return parser


def _cuda_timer(cupy, warmup, repeats, fn):
    """Median milliseconds of fn() by CUDA events on the current stream, after warm-up."""
    for _ in range(warmup):
        fn()
    cupy.cuda.get_current_stream().synchronize()
    times = []
    for _ in range(repeats):
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, end))
    return statistics.median(times), times


def _host_timer(warmup, repeats, fn):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), times


def gemm_rate(cupy, dtype, n=8192):
    """TFLOP/s of one n×n×n GEMM through cuBLAS (the ceiling the recurrent rates are compared with)."""
    a = cupy.random.standard_normal((n, n)).astype(dtype)
    b = cupy.random.standard_normal((n, n)).astype(dtype)
    c = cupy.empty((n, n), dtype=dtype)
    ms, _ = _cuda_timer(cupy, 2, 5, lambda: cupy.matmul(a, b, out=c))
    return 2 * n ** 3 / (ms * 1e-3) / 1e12


def run_suite(args):
    """Time every shape; returns {'suite': 'gpu', 'machine': ..., 'gemm_tflops': ..., 'rows': [...]}."""
    import cupy
    import numpy as np
    import torch

    import rnnbackends
    from rnnbackends.interop import to_torch_rnn_params

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = False
    dtype = args.dtype
    tdtype = getattr(torch, dtype)
    ours = rnnbackends.get_backend("cupy")
    numba = None
    if not args.no_numba:
        try:
            numba = rnnbackends.get_backend("numba")
        except Exception as exc:  # unavailable peer: reported, not fatal
            print(f"[gpu] numba peer unavailable: {exc}", file=sys.stderr)
    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    peak = gemm_rate(cupy, dtype, args.gemm_size)
    print(f"[gpu] {name}: cuBLAS {dtype} GEMM {args.gemm_size}³ = {peak:.1f} TFLOP/s (TF32 off)", file=sys.stderr)
    rows, started = [], time.monotonic()
    tdev = args.torch_device
    for H, B, T, group in shapes(args.quick, args.shapes):
        if time.monotonic() - started > args.time_budget:
            rows.append({"H": H, "B": B, "T": T, "group": group, "skipped": "time budget"})
            continue
        D = H
        rng = np.random.default_rng(0)
        bound = 1 / np.sqrt(H)
        host = {"x": rng.standard_normal((T, B, D)), "a0": np.zeros((B, H)),
                "w_x": rng.uniform(-bound, bound, (D, H)), "w_a": rng.uniform(-bound, bound, (H, H)),
                "b_a": rng.uniform(-bound, bound, (H,)), "d_a": rng.standard_normal((T, B, H))}
        host = {k: v.astype(dtype) for k, v in host.items()}
        dev = {k: cupy.asarray(v) for k, v in host.items()}
        args_ours = [dev[k] for k in ("x", "a0", "w_x", "w_a", "b_a")]
        path = ours.impl.path(B, H, dtype)
        rnn = torch.nn.RNN(D, H, nonlinearity="tanh").to(device=tdev, dtype=tdtype)
        rnn.load_state_dict({k: torch.from_numpy(v)
                             for k, v in to_torch_rnn_params(host["w_x"], host["w_a"], host["b_a"]).items()})
        tx = torch.from_numpy(host["x"]).to(tdev).requires_grad_()
        th = torch.zeros((1, B, H), device=tdev, dtype=tdtype)
        tg = torch.from_numpy(host["d_a"]).to(tdev)

        def ours_fwd():
            ours.forward_sequence(*args_ours)

        def ours_fwd_bwd():
            _, _, saved = ours.forward_sequence(*args_ours)
            ours.backward_sequence(saved, dev["d_a"])

        def cudnn_fwd():
            with torch.no_grad():
                rnn(tx, th)

        def cudnn_fwd_bwd():
            out, _ = rnn(tx, th)
            torch.autograd.backward(out, tg)

        timings = {}
        for impl, fns in (("cupy", (ours_fwd, ours_fwd_bwd)), ("cudnn", (cudnn_fwd, cudnn_fwd_bwd))):
            for pname, fn in zip(PASSES, fns):
                ms, all_ms = _cuda_timer(cupy, args.warmup, args.repeats, fn)
                timings[(impl, pname)] = (ms, all_ms)
        flop_fwd = 2 * B * H * H * T
        if numba is not None and flop_fwd * (D + H) / H <= args.numba_max_flop:
            nargs = [host[k] for k in ("x", "a0", "w_x", "w_a", "b_a")]

            def numba_fwd():
                numba.forward_sequence(*nargs)

            def numba_fwd_bwd():
                _, _, saved = numba.forward_sequence(*nargs)
                numba.backward_sequence(saved, host["d_a"])

            for pname, fn in zip(PASSES, (numba_fwd, numba_fwd_bwd)):
                timings[("numba (host)", pname)] = _host_timer(1, 3, fn)
        for (impl, pname), (ms, all_ms) in timings.items():
            flop = flop_fwd * (1 if pname == "forward" else 3)
            cudnn_ms = timings[("cudnn", pname)][0]
            tflops = flop / (ms * 1e-3) / 1e12
            rows.append({"H": H, "B": B, "T": T, "D": D, "group": group, "dtype": dtype, "impl": impl,
                         "pass": pname, "median_ms": ms, "repeats_ms": all_ms, "us_per_step": ms * 1e3 / T,
                         "speedup_vs_cudnn": cudnn_ms / ms, "recurrent_tflops": tflops,
                         "fraction_of_gemm": tflops / peak, "path": path.kind if impl == "cupy" else None})
        print(f"[gpu] H={H} B={B} T={T} path={path.kind}: " + ", ".join(
            f"{i}/{p} {timings[(i, p)][0]:.3f} ms" for i, p in timings), file=sys.stderr)
        del dev, rnn, tx, tg
        cupy.get_default_memory_pool().free_all_blocks()
        torch.cuda.empty_cache()
    machine = {"device": name, "sm": f"{props['major']}{props['minor']}", "sms": props["multiProcessorCount"],
               "host": platform.node(), "cupy": cupy.__version__, "torch": torch.__version__,
               "cudnn": torch.backends.cudnn.version(), "backend": ours.info.reason if hasattr(ours, "info") else "",
               "persistent_error": getattr(ours.impl.device, "persistent_error", None)}
    return {"suite": "gpu", "peer": PEER, "primary": "cupy", "machine": machine,
            "gemm_tflops": peak, "dtype": dtype, "tf32": False, "warmup": args.warmup,
            "repeats": args.repeats, "rows": rows}


def markdown(result):
    """The result as a Markdown table, one row per shape and pass."""
    lines = [f"# GPU suite — {result['machine']['device']} ({result['dtype']}, TF32 off)", "",
             f"cuBLAS GEMM ceiling: {result['gemm_tflops']:.1f} TFLOP/s. Median of {result['repeats']} after "
             f"{result['warmup']} warm-up runs, CUDA events.", "",
             "| group | H | B | T | pass | path | ours µs/step | cuDNN µs/step | speed-up vs cuDNN | "
             "ours TFLOP/s | of GEMM | numba (host) µs/step |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    index = {(r["H"], r["B"], r["T"], r.get("impl"), r.get("pass")): r for r in result["rows"]}
    for r in result["rows"]:
        if r.get("skipped"):
            lines.append(f"| {r['group']} | {r['H']} | {r['B']} | {r['T']} | — | — | skipped: {r['skipped']} "
                         f"| | | | | |")
            continue
        if r["impl"] != "cupy":
            continue
        key = (r["H"], r["B"], r["T"])
        cudnn = index[key + ("cudnn", r["pass"])]
        nb = index.get(key + ("numba (host)", r["pass"]))
        nb = "" if nb is None else f"{nb['us_per_step']:.1f}"
        lines.append(f"| {r['group']} | {r['H']} | {r['B']} | {r['T']} | {r['pass']} | {r['path']} | "
                     f"{r['us_per_step']:.1f} | {cudnn['us_per_step']:.1f} | {r['speedup_vs_cudnn']:.2f}× | "
                     f"{r['recurrent_tflops']:.2f} | {100 * r['fraction_of_gemm']:.1f}% | "
                     f"{nb} |")
    return "\n".join(lines) + "\n"


def write(result, out_dir):
    """gpu.json and gpu.md under out_dir; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_atomically(out / "gpu.json", json.dumps(result, indent=1))
    write_atomically(out / "gpu.md", markdown(result))
    return out / "gpu.json", out / "gpu.md"


def main(argv=None):
    """python -m perf.gpu --out DIR [--quick]: run the GPU suite on its own and write JSON + Markdown."""
    parser = add_arguments(argparse.ArgumentParser(prog="python -m perf.gpu", description=__doc__.splitlines()[0]))
    parser.add_argument("--out", default="perf/results/gpu")
    parser.add_argument("--list", action="store_true", help="print the shapes and exit")
    args = parser.parse_args(argv)
    if args.list:
        for row in shapes(args.quick, args.shapes):
            print(*row)
        return 0
    result = run_suite(args)
    for path in write(result, args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
