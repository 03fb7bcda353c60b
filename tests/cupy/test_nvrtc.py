"""Every .cu file compiles through NVRTC, the compiler CuPy really uses, as CuPy would call it; no GPU needed.

The source, options and name expressions come from rnnbackends_cupy.device (what CudaDevice hands to
cupy.RawModule); CuPy adds -ftz=true, --device-c for cooperative modules and the architecture
(cupy/cuda/compiler.py, _compile_with_cache_cuda), so the test adds the same. Each name expression must lower
to a mangled name that the compiled CUBIN defines. NVRTC comes from the `cuda-bindings` package (test extra)
and its `nvidia-cuda-nvrtc` library; both need no driver. Skips with the reason when they are absent.
"""
import os
import shutil
from pathlib import Path

import pytest
from rnnbackends_cupy.device import MODULES, OPTIONS, kernel_source, name_expressions


def _nvrtc():
    try:
        from cuda.bindings import nvrtc
    except ImportError as exc:
        return None, f"cuda-bindings is not installed ({exc}); pip install 'rnnbackends[test]'"
    try:
        err, major, minor = nvrtc.nvrtcVersion()
    except Exception as exc:  # the NVRTC library itself could not be loaded
        return None, f"no NVRTC library for cuda-bindings ({type(exc).__name__}: {exc}); pip install nvidia-cuda-nvrtc"
    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        return None, f"nvrtcVersion failed: {err}"
    return nvrtc, f"NVRTC {major}.{minor}"


NVRTC, VERSION = _nvrtc()
pytestmark = pytest.mark.skipif(NVRTC is None, reason=f"no NVRTC: {VERSION}")


def _cuda_include_dirs():
    """The CUDA toolkit's headers (cooperative_groups.h and, from CUDA 13, its CCCL dependencies), if present."""
    nvcc = shutil.which("nvcc")
    roots = [os.environ.get("CUDA_PATH"), os.environ.get("CUDA_HOME"), "/usr/local/cuda",
             nvcc and str(Path(nvcc).resolve().parent.parent)]
    for root in filter(None, roots):
        include = Path(root) / "include"
        if (include / "cooperative_groups.h").exists():
            return [str(include)] + ([str(include / "cccl")] if (include / "cccl").is_dir() else [])
    return None


def _check(result, what, prog=None):
    if result[0] != NVRTC.nvrtcResult.NVRTC_SUCCESS:
        log = ""
        if prog is not None:
            _, size = NVRTC.nvrtcGetProgramLogSize(prog)
            buf = b" " * size
            NVRTC.nvrtcGetProgramLog(prog, buf)
            log = buf.decode(errors="replace").rstrip("\0")
        pytest.fail(f"{what}: {result[0]}\n{log}")
    return result[1:]


def compile_as_cupy(filename, arch, include_dirs):
    """NVRTC-compile `filename` as CuPy's RawModule does -> {name expression: lowered name}, cubin bytes."""
    cooperative = MODULES[filename][1]
    options = (*OPTIONS, "-ftz=true", *(("--device-c",) if cooperative else ()), f"-arch={arch}",
               *(f"-I{d}" for d in include_dirs))
    (prog,) = _check(NVRTC.nvrtcCreateProgram(kernel_source(filename).encode(), filename.encode(), 0, [], []),
                     "nvrtcCreateProgram")
    try:
        for expr in name_expressions(filename):
            _check(NVRTC.nvrtcAddNameExpression(prog, expr.encode()), f"nvrtcAddNameExpression({expr})")
        encoded = [o.encode() for o in options]
        _check(NVRTC.nvrtcCompileProgram(prog, len(encoded), encoded), f"{filename} {' '.join(options)}", prog)
        lowered = {expr: _check(NVRTC.nvrtcGetLoweredName(prog, expr.encode()), f"lowered name of {expr}")[0]
                   for expr in name_expressions(filename)}
        (size,) = _check(NVRTC.nvrtcGetCUBINSize(prog), "nvrtcGetCUBINSize")
        cubin = b" " * size
        _check(NVRTC.nvrtcGetCUBIN(prog, cubin) + (None,), "nvrtcGetCUBIN")
        return lowered, cubin
    finally:
        NVRTC.nvrtcDestroyProgram(prog)


@pytest.mark.parametrize("groups, arch", [("cooperative_groups", "sm_90"), ("cooperative_groups", "sm_80"),
                                          ("fallback_barrier", "sm_90")])
@pytest.mark.parametrize("filename", sorted(MODULES))
def test_nvrtc_compiles_with_cupys_options_and_names_resolve(filename, groups, arch):
    """NVRTC compiles each module; every kernel<float>/kernel<double> lowers to a name the CUBIN defines."""
    include_dirs = _cuda_include_dirs() if groups == "cooperative_groups" else []
    if include_dirs is None:
        pytest.skip("no CUDA toolkit headers (cooperative_groups.h) for NVRTC's include path")
    lowered, cubin = compile_as_cupy(filename, arch, include_dirs)
    assert set(lowered) == {f"{k}<{t}>" for k in MODULES[filename][0] for t in ("float", "double")}
    for expr, name in lowered.items():
        assert name and name.startswith(b"_Z") and expr.split("<")[0].encode() in name, (expr, name)
        assert name in cubin, f"{expr} lowers to {name!r}, which the CUBIN does not define"
    print(f"\n{VERSION} {filename} {arch} {groups}: {len(lowered)} kernels, CUBIN {len(cubin)} B")
