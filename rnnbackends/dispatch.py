"""The validating handle: checks every argument once, then calls the backend (docs/contract.md)."""
from __future__ import annotations

import os

from .arrays import checked_lengths

NONLINEARITIES = ("tanh", "relu")
FLOAT_DTYPES = ("float16", "float32", "float64")


class Saved:
    """What ``forward_sequence`` returns for backward: the backend's own state plus the shapes it checks."""

    __slots__ = ("backend_name", "shape", "dtype", "inner")

    def __init__(self, backend_name, shape, dtype, inner):
        self.backend_name, self.shape, self.dtype, self.inner = backend_name, shape, dtype, inner

    def __repr__(self):
        t, b, h = self.shape
        return f"<saved forward of backend {self.backend_name!r}: T={t} B={b} H={h} {self.dtype}>"


def _check_finite() -> bool:
    return os.environ.get("RNNBACKENDS_CHECK_FINITE", "") not in ("", "0")


class Backend:
    """A selected backend behind the contract's checks; ``name``, ``xp`` and ``capabilities`` pass through."""

    def __init__(self, impl, info):
        self.impl = impl
        self.info = info
        self.name = impl.name
        self.xp = impl.xp
        self.capabilities = frozenset(impl.capabilities)

    def __repr__(self):
        return f"<rnnbackends backend {self.name!r} ({self.info.spec.device})>"

    # -- the contract ---------------------------------------------------------------------------
    def forward_sequence(self, x, a0, w_x, w_a, b_a, *, lengths=None, nonlinearity="tanh"):
        """A_t = g(X_t·W_X + A_{t-1}·W_A + b_A) for t=1..T -> (a (T,B,H), a_n (B,H), saved)."""
        x, a0, w_x, w_a, b_a = self._arrays(x=x, a0=a0, w_x=w_x, w_a=w_a, b_a=b_a)
        T, B, D = x.shape
        if T == 0 or B == 0:
            raise ValueError(f"x must hold at least one step and one sequence, got shape (T, B, D) = {x.shape}")
        H = w_x.shape[1]
        _shape("w_x", w_x, (D, H), "(D, H)", "D from x")
        _shape("a0", a0, (B, H), "(B, H)", "B from x, H from w_x")
        _shape("w_a", w_a, (H, H), "(H, H)", "H from w_x")
        _shape("b_a", b_a, (H,), "(H,)", "H from w_x")
        if nonlinearity not in NONLINEARITIES:
            raise ValueError(f"nonlinearity must be one of {NONLINEARITIES}, got {nonlinearity!r}")
        self._require(nonlinearity, f"nonlinearity={nonlinearity!r}")
        if lengths is not None:
            self._require("lengths", "lengths=")
            lengths = checked_lengths(lengths, T, B)
        a, a_n, inner = self.impl.forward_sequence(x, a0, w_x, w_a, b_a, lengths=lengths,
                                                   nonlinearity=nonlinearity)
        return a, a_n, Saved(self.name, (T, B, H), x.dtype, inner)

    def backward_sequence(self, saved, d_a, d_a_n=None):
        """BPTT from dL/dA (T,B,H) and dL/dA_n (B,H) -> (d_x, d_a0, d_w_x, d_w_a, d_b_a)."""
        if not isinstance(saved, Saved):
            raise TypeError(f"saved must be the third value returned by forward_sequence, "
                            f"got {type(saved).__name__}")
        if saved.backend_name != self.name:
            raise TypeError(f"saved comes from backend {saved.backend_name!r}; pass it back to that "
                            f"backend's backward_sequence, not {self.name!r}'s")
        T, B, H = saved.shape
        arrays = {"d_a": d_a} if d_a_n is None else {"d_a": d_a, "d_a_n": d_a_n}
        checked = self._arrays(**arrays, dtype=saved.dtype)
        d_a = checked[0]
        _shape("d_a", d_a, (T, B, H), "(T, B, H)", "as a from forward_sequence")
        if d_a_n is not None:
            d_a_n = checked[1]
            _shape("d_a_n", d_a_n, (B, H), "(B, H)", "as a_n from forward_sequence")
        return self.impl.backward_sequence(saved.inner, d_a, d_a_n)

    # -- checks ---------------------------------------------------------------------------------
    def _require(self, capability, what):
        if capability not in self.capabilities:
            raise NotImplementedError(f"backend {self.name!r} does not support {what} (its capabilities: "
                                      f"{', '.join(sorted(self.capabilities))}); select another backend")

    def _arrays(self, dtype=None, **arrays):
        """Type, rank, dtype and finiteness of each named array; returns them C-contiguous."""
        xp = self.xp
        out = []
        dtype_from = "forward's inputs" if dtype is not None else None
        for name, arr in arrays.items():
            if not isinstance(arr, xp.ndarray):
                raise TypeError(f"{name} must be a {xp.__name__}.ndarray (backend {self.name!r} works on "
                                f"{xp.__name__} arrays), got {type(arr).__module__}.{type(arr).__name__}; "
                                f"convert it with backend.xp.asarray({name})")
            want_ndim = {"x": 3, "d_a": 3, "b_a": 1}.get(name, 2)
            if arr.ndim != want_ndim:
                raise ValueError(f"{name} must be {want_ndim}-D {_SHAPES[name]}, got shape {tuple(arr.shape)}")
            if dtype is None:
                if arr.dtype.name not in FLOAT_DTYPES:
                    raise TypeError(f"{name} has dtype {arr.dtype}; rnnbackends computes in float32 or "
                                    f"float64: convert with {name}.astype('float32')")
                dtype, dtype_from = arr.dtype, name
                self._require(arr.dtype.name, f"dtype {arr.dtype.name}")
            elif arr.dtype != dtype:
                raise TypeError(f"{name} has dtype {arr.dtype} but {dtype_from} has {dtype}; "
                                f"convert it with {name}.astype('{dtype}')")
            if _check_finite() and not bool(xp.isfinite(arr).all()):
                raise ValueError(f"{name} contains NaN or Inf (RNNBACKENDS_CHECK_FINITE is set)")
            out.append(xp.ascontiguousarray(arr))
        return out


_SHAPES = {"x": "(T, B, D)", "a0": "(B, H)", "w_x": "(D, H)", "w_a": "(H, H)", "b_a": "(H,)",
           "d_a": "(T, B, H)", "d_a_n": "(B, H)"}


def _shape(name, arr, want, pattern, origin):
    if tuple(arr.shape) != want:
        raise ValueError(f"{name} must have shape {pattern} = {want} ({origin}), got {tuple(arr.shape)}")
