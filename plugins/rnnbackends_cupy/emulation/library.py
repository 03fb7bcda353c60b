"""The emulator library: g++ builds the backend's .cu files with emulator.cpp, ctypes launches them.

The library is cached by a hash of the sources, flags and compiler under $RNNBACKENDS_CACHE_DIR or
~/.cache/rnnbackends/emulator (a temp dir if that is not writable). Launches take the same arguments as a
CuPy RawKernel call: NumPy arrays (passed as pointers) and NumPy scalars (np.int32, np.float32, ...).
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import itertools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from ..device import MODULES

HERE = Path(__file__).resolve().parent
KERNELS = HERE.parent                      # the backend's own .cu files and headers
KERNEL_SOURCES = (*(KERNELS / name for name in MODULES), HERE / "selftest.cu")
RUNTIME_SOURCES = (HERE / "emulator.cpp",)
HEADERS = (*sorted(KERNELS.glob("*.cuh")), HERE / "cuda_emulated.cuh")
CXXFLAGS = ("-std=c++20", "-O2", "-fPIC", "-shared", "-U_FORTIFY_SOURCE", "-fno-strict-aliasing")


class EmulatorError(RuntimeError):
    """A kernel misbehaved under emulation (barrier divergence, bad launch) or the library did not build."""


def compiler():
    """The C++ compiler the emulator uses ($CXX, else g++), or None."""
    return shutil.which(os.environ.get("CXX", "g++"))


def _cache_dir() -> Path:
    base = os.environ.get("RNNBACKENDS_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "rnnbackends")
    path = Path(base) / "emulator"
    try:
        path.mkdir(parents=True, exist_ok=True)
        if os.access(path, os.W_OK):
            return path
    except OSError:
        pass
    path = Path(tempfile.gettempdir()) / f"rnnbackends-emulator-{os.getuid()}"
    path.mkdir(parents=True, exist_ok=True)
    return path


@functools.cache
def _compiler_version(cxx):
    return subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout


def build(defines=()) -> Path:
    """Compile (or find cached) the emulator library with the given -D macros; returns its path."""
    cxx = compiler()
    if cxx is None:
        raise EmulatorError("no C++ compiler (g++) found: the CUDA emulator needs one ($CXX to choose)")
    flags = list(CXXFLAGS) + [f"-D{d}" for d in defines]
    digest = hashlib.sha256()
    for path in HEADERS + KERNEL_SOURCES + RUNTIME_SOURCES:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    digest.update(" ".join(flags).encode() + _compiler_version(cxx).encode())
    out = _cache_dir() / f"rnnb_emulator_{digest.hexdigest()[:20]}.so"
    if out.exists():
        return out
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    cmd = [cxx, *flags, f"-I{KERNELS}", "-o", str(tmp), "-x", "c++",
           *[str(s) for s in KERNEL_SOURCES + RUNTIME_SOURCES]]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise EmulatorError(f"building the CUDA emulator failed:\n{' '.join(cmd)}\n{proc.stderr[-4000:]}")
    os.replace(tmp, out)  # atomic: concurrent builders agree on the result
    return out


class Library:
    """One loaded emulator library: launch(name, grid, block, args, shared_mem, cooperative)."""

    _seeds = itertools.count()

    def __init__(self, path: Path, seed: int | None = None):
        self.path = path
        self.lib = ctypes.CDLL(str(path))
        self.lib.rnnb_emu_launch.restype = ctypes.c_int
        self.lib.rnnb_emu_launch.argtypes = [
            ctypes.c_char_p, *([ctypes.c_uint] * 6), ctypes.c_size_t, ctypes.c_int, ctypes.c_ulonglong,
            ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_size_t), ctypes.c_int,
            ctypes.c_char_p, ctypes.c_size_t]
        self.lib.rnnb_emu_kernel_name.restype = ctypes.c_char_p
        base = os.environ.get("RNNBACKENDS_EMU_SEED", "0") if seed is None else seed
        self.base_seed = int(base)

    def kernel_names(self):
        """The name expressions of every kernel in the library, e.g. 'rnn_forward_step<float>'."""
        return [self.lib.rnnb_emu_kernel_name(i).decode() for i in range(self.lib.rnnb_emu_kernel_count())]

    def launch(self, name, grid, block, args, shared_mem=0, cooperative=False, seed=None):
        """Run kernel `name` over grid × block CUDA threads with CUDA semantics; raises EmulatorError."""
        values = [_c_value(a) for a in args]
        ptrs = (ctypes.c_void_p * max(1, len(values)))(*[ctypes.cast(ctypes.pointer(v), ctypes.c_void_p)
                                                          for v in values])
        sizes = (ctypes.c_size_t * max(1, len(values)))(*[ctypes.sizeof(v) for v in values])
        grid, block = _dim3(grid), _dim3(block)
        seed = self.base_seed * 1_000_003 + next(self._seeds) if seed is None else seed
        err = ctypes.create_string_buffer(1024)
        rc = self.lib.rnnb_emu_launch(name.encode(), *grid, *block, int(shared_mem), int(cooperative), seed,
                                      ptrs, sizes, len(values), err, len(err))
        if rc != 0:
            raise EmulatorError(err.value.decode(errors="replace"))


def _dim3(d):
    d = (d,) if isinstance(d, (int, np.integer)) else tuple(d)
    return tuple(int(v) for v in d) + (1,) * (3 - len(d))


_SCALARS = {np.dtype(np.int32): ctypes.c_int32, np.dtype(np.int64): ctypes.c_int64,
            np.dtype(np.float32): ctypes.c_float, np.dtype(np.float64): ctypes.c_double,
            np.dtype(np.uint32): ctypes.c_uint32, np.dtype(np.uint64): ctypes.c_uint64}


def _c_value(a):
    """A kernel argument as a ctypes value: arrays by data pointer, NumPy scalars by value."""
    if isinstance(a, np.ndarray):
        if not a.flags.c_contiguous:
            raise EmulatorError("kernel arguments must be C-contiguous arrays")
        return ctypes.c_void_p(a.ctypes.data)
    if isinstance(a, np.generic) and a.dtype in _SCALARS:
        return _SCALARS[a.dtype](a.item())
    raise EmulatorError(f"kernel argument {a!r}: pass a NumPy array or a NumPy scalar (np.int32, np.float32...)")


@functools.cache
def library(defines=()) -> Library:
    """The emulator library built with `defines` (cached per process)."""
    return Library(build(tuple(defines)))
