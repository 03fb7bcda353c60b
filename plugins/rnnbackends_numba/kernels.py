"""The numba backend's njit kernels: the sequential A-chain, its backward, and a vectorisable tanh.

Importing this module imports numba; ``backend.py`` imports it only when the backend is used. The GRU and LSTM
chains (below the simple cell's) share its tiles and tanh and live in this file too: numba's on-disk cache
checks only the file of each cached function, so kernels that compile one another in must change together.

Shapes (lecture notation): a (T, B, H) holds X_t·W_X on entry to the forward chain and A_t on exit;
w_a_t = W_Aᵀ (H, H); dz (T, B, H) is dL/dZ_t; "packed" weights are (H // LANES, H, LANES), see pack_columns.

The recurrent product runs in register tiles (8 batch rows × 3 512-bit vectors of units on AVX-512 CPUs,
4 rows × 3 256-bit vectors elsewhere; explicit FMAs, see below), units outermost so a strip of weights is read
once per step and reused by every block of rows. The activation runs afterwards over each finished row, where
the branch-free ``tanh`` below vectorises.
Results are bit-identical from call to call (the compiled order is fixed) and whatever the split of rows or
units across threads (a unit's sum over k never depends on it).
"""
import math
import platform

import llvmlite.binding
import numpy as np
from llvmlite import ir
from numba import njit, prange
from numba.core import cgutils, config, types
from numba.extending import intrinsic, overload

# JIT flags, set here once. ``reassoc`` and ``contract`` only: sums may be reordered and fused into FMAs,
# but NaN and Inf keep their meaning (no ``nnan``/``ninf``), so NaN in padded d_a is never touched.
# error_model="numpy" drops Python's division checks, which would block vectorisation.
FASTMATH = {"reassoc", "contract"}
serial = njit(cache=True, nogil=True, fastmath=FASTMATH, error_model="numpy")
parallel = njit(cache=True, nogil=True, fastmath=FASTMATH, error_model="numpy", parallel=True)



def _avx512():
    """Whether numba compiles for a CPU with AVX-512 (its 32 vector registers hold the larger tile)."""
    features = config.CPU_FEATURES if config.CPU_FEATURES is not None else \
        llvmlite.binding.get_host_cpu_features().flatten()
    return "+avx512f" in features.split(",")


# Tile geometry by vector unit, measured (forward chains, H 128-512, B 8-64, one core): 8 rows × 3 512-bit
# vectors on AVX-512; on AVX2 (16 registers) 4 rows × 3 256-bit vectors, 2-3× faster at H ≥ 256 than the
# AVX-512 tile split in halves, which spills.
AVX512 = _avx512()
ROWS = 8 if AVX512 else 4       # batch rows per register tile (and the granule of the split across threads)
HALF = ROWS // 2                # rows of the tile for a remainder of HALF to ROWS - 1 rows


# -- tanh -------------------------------------------------------------------------------------------
# tanh(x) = x + x·s·R(s), s = x², for |x| ≤ 0.625 (Cephes tanh/tanhf), else sign(x)·(1 − 2/(e^{2|x|} + 1))
# with e^y = 2^n·e^r, r = y − n·ln2 (Cephes exp/expf). Both branches are computed and one is selected,
# so a loop over a row vectorises; 2^n is built from its exponent bits.

def _make_pow2(int_type, float_type, bias, mantissa_bits):
    """2.0**n of float_type for an int_type n within the normal exponent range, from the exponent bits."""
    @intrinsic
    def pow2(typingctx, n):
        if n != int_type:
            return None

        def codegen(context, builder, signature, args):
            integer = ir.IntType(int_type.bitwidth)
            bits = builder.shl(builder.add(args[0], ir.Constant(integer, bias)), ir.Constant(integer, mantissa_bits))
            return builder.bitcast(bits, context.get_value_type(float_type))
        return float_type(int_type), codegen
    return pow2


_pow2_f64 = _make_pow2(types.int64, types.float64, 1023, 52)    # n in [-1022, 1023]
_pow2_f32 = _make_pow2(types.int32, types.float32, 127, 23)     # n in [-126, 127]


_D = np.float64
TANH_P = (_D(-9.64399179425052238628e-1), _D(-9.92877231001918586564e1), _D(-1.61468768441708447952e3))
TANH_Q = (_D(1.12811678491632931402e2), _D(2.23548839060100448583e3), _D(4.84406305325125486048e3))
EXP_P = (_D(1.26177193074810590878e-4), _D(3.02994407707441961300e-2), _D(9.99999999999999999910e-1))
EXP_Q = (_D(3.00198505138664455042e-6), _D(2.52448340349684104192e-3), _D(2.27265548208155028766e-1),
         _D(2.00000000000000000009e0))
LN2_HI, LN2_LO, LOG2E = _D(6.93145751953125e-1), _D(1.42860682030941723212e-6), _D(1.4426950408889634)
_S = np.float32
TANHF_P = (_S(-5.70498872745e-3), _S(2.06390887954e-2), _S(-5.37397155531e-2), _S(1.33314422036e-1),
           _S(-3.33332819422e-1))
EXPF_P = (_S(1.9875691500e-4), _S(1.3981999507e-3), _S(8.3334519073e-3), _S(4.1665795894e-2),
          _S(1.6666665459e-1), _S(5.0000001201e-1))
LN2F_HI, LN2F_LO, LOG2EF = _S(0.693359375), _S(-2.12194440e-4), _S(1.44269504088896341)


def _tanh_f64(x):
    """tanh of a float64, within a few ulp of np.tanh, branch-free."""
    z = abs(x)
    s = x * x
    small_num = x * s * ((TANH_P[0] * s + TANH_P[1]) * s + TANH_P[2])       # x + small_num/small_den
    small_den = ((s + TANH_Q[0]) * s + TANH_Q[1]) * s + TANH_Q[2]
    y = min(z + z, _D(40.0))                                                  # tanh(20) is 1.0 in float64
    n = np.floor(y * LOG2E + _D(0.5))
    r = (y - n * LN2_HI) - n * LN2_LO
    rr = r * r
    p = r * ((EXP_P[0] * rr + EXP_P[1]) * rr + EXP_P[2])
    q = ((EXP_Q[0] * rr + EXP_Q[1]) * rr + EXP_Q[2]) * rr + EXP_Q[3]
    u = q - p                                                                 # e^r = (q + p)/(q − p)
    big_den = (q + p) * _pow2_f64(np.int64(n)) + u                            # (e^y + 1)·u
    large = z > _D(0.625)
    base = math.copysign(_D(1.0), x) if large else x
    num = math.copysign(u + u, -x) if large else small_num
    den = big_den if large else small_den
    return base + num / den


def _tanh_f32(x):
    """tanh of a float32, within a few ulp of np.tanh, branch-free."""
    z = abs(x)
    s = x * x
    small = x + x * s * ((((TANHF_P[0] * s + TANHF_P[1]) * s + TANHF_P[2]) * s + TANHF_P[3]) * s + TANHF_P[4])
    y = min(z + z, _S(20.0))                                                  # tanh(10) is 1.0 in float32
    n = np.floor(y * LOG2EF + _S(0.5))
    r = (y - n * LN2F_HI) - n * LN2F_LO
    poly = (((((EXPF_P[0] * r + EXPF_P[1]) * r + EXPF_P[2]) * r + EXPF_P[3]) * r + EXPF_P[4]) * r
            + EXPF_P[5])
    e = (r * r * poly + r + _S(1.0)) * _pow2_f32(np.int32(n))
    large = math.copysign(_S(1.0) - _S(2.0) / (e + _S(1.0)), x)
    return large if z > _S(0.625) else small


def tanh(x):
    """Vectorisable tanh of a float32 or float64 scalar in njit code; np.tanh under NUMBA_DISABLE_JIT=1."""
    return np.tanh(x)


def _overload_by_dtype(generic, f32, f64):
    """Compile calls of ``generic`` in njit code to ``f32`` or ``f64`` by the argument's float type."""
    overload(generic)(lambda x: {types.float32: f32, types.float64: f64}.get(x))


_overload_by_dtype(tanh, _tanh_f32, _tanh_f64)


@serial
def tanh_into(x, out):
    """out[...] = tanh(x) elementwise (1-D arrays); the accuracy tests call this."""
    for i in range(x.shape[0]):
        out[i] = tanh(x[i])


@serial
def _activate_row(row, relu):
    """row (H,) ← g(row) in place."""
    if relu:
        zero = row.dtype.type(0)
        for j in range(row.shape[0]):
            v = row[j]
            row[j] = zero if v < zero else v                     # NaN stays NaN, as in np.maximum
    else:
        for j in range(row.shape[0]):
            row[j] = tanh(row[j])


# -- the recurrent product, register-tiled -------------------------------------------------------------
# out[b, j] += Σ_k p[b, k]·w[k, j] for the rows b still inside their length. The weights come packed once per
# call as w_packed (N // LANES, K, LANES), LANES = 16 float32 or 8 float64 (one 512-bit vector; half that with
# 256-bit ones): column vector v of w, contiguous along k, so every tile streams memory in order. A tile keeps
# ROWS × VECTORS accumulators of one vector each in registers across the whole k loop: per k it loads VECTORS
# weight vectors, broadcasts one p[b, k] per row and issues ROWS × VECTORS FMAs. On AVX-512, 24 accumulators,
# 3 weight vectors and a broadcast fill 28 of the 32 vector registers, and 8 rows per weight load ran 15-30 %
# faster than 4 (H 128-1024, B 8-64, one core) and above OpenBLAS's rate for these products; AVX2's 16 hold
# 4 rows × 3 (12 + 3 + 1). LLVM would pick narrower vectors on its own here, so the tiles are written in LLVM
# IR with explicit vectors of VECTOR_BYTES. The last N % LANES units use dot products against m = wᵀ (N, K).

VECTOR_BYTES = 64 if AVX512 else 32
CACHE_LINE = 64            # bytes: every array the chain reads or writes starts on one (``empty``)
VECTORS = 3                # weight vectors per tile: 48 float32 or 24 float64 units (AVX-512)


def _make_tile(rows, vectors):
    """tile(p, w_packed, out, b, v): out[b:b+rows, v·L:(v+vectors)·L] += p[b:b+rows]·w, L = LANES."""
    # In njit code tile is the LLVM-IR intrinsic below; in Python (NUMBA_DISABLE_JIT=1) the same product in NumPy.

    def tile(p, w_packed, out, b, v):
        lanes = w_packed.shape[2]
        w_strip = np.concatenate(list(w_packed[v:v + vectors]), axis=1)     # (K, vectors·L)
        out[b:b + rows, v * lanes:(v + vectors) * lanes] += p[b:b + rows] @ w_strip

    @overload(tile)
    def _tile_jit(p, w_packed, out, b, v):
        return lambda p, w_packed, out, b, v: _tile_ir(p, w_packed, out, b, v)

    @intrinsic
    def _tile_ir(typingctx, p, w_packed, out, b, v):
        if not (isinstance(p, types.Array) and p.ndim == 2 and w_packed.ndim == 3 and out.ndim == 2
                and p.layout == w_packed.layout == out.layout == "C" and p.dtype == w_packed.dtype == out.dtype):
            return None

        def codegen(context, builder, signature, args):
            p_arr, w_arr, out_arr = (context.make_array(ty)(context, builder, val)
                                     for ty, val in zip(signature.args[:3], args[:3]))
            b, v = (context.cast(builder, val, ty, types.intp) for val, ty in zip(args[3:], signature.args[3:]))
            element = context.get_data_type(signature.args[0].dtype)
            lanes = VECTOR_BYTES // context.get_abi_sizeof(element)
            vector = ir.VectorType(element, lanes)
            intp = context.get_value_type(types.intp)
            K = cgutils.unpack_tuple(builder, p_arr.shape, 2)[1]
            N = cgutils.unpack_tuple(builder, out_arr.shape, 2)[1]
            fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vector, [vector] * 3),
                                                 f"llvm.fma.v{lanes}f{8 * context.get_abi_sizeof(element)}")
            undef = ir.Constant(vector, ir.Undefined)
            broadcast = ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes)

            def const(i):
                return ir.Constant(intp, i)

            def vector_at(data, offset):
                return builder.bitcast(builder.gep(data, [offset]), vector.as_pointer())

            out_at = [[vector_at(out_arr.data, builder.add(builder.mul(builder.add(b, const(r)), N),
                                                           builder.mul(builder.add(v, const(c)), const(lanes))))
                       for c in range(vectors)] for r in range(rows)]
            acc = [[cgutils.alloca_once(builder, vector) for _ in range(vectors)] for _ in range(rows)]
            for r in range(rows):
                for c in range(vectors):
                    builder.store(builder.load(out_at[r][c], align=1), acc[r][c])
            p_row = [builder.mul(builder.add(b, const(r)), K) for r in range(rows)]
            w_column = [builder.mul(builder.add(v, const(c)), builder.mul(K, const(lanes))) for c in range(vectors)]
            with cgutils.for_range(builder, K) as loop:
                k = loop.index
                k_lanes = builder.mul(k, const(lanes))
                w_k = [builder.load(vector_at(w_arr.data, builder.add(w_column[c], k_lanes)), align=1)
                       for c in range(vectors)]
                for r in range(rows):
                    p_bk = builder.load(builder.gep(p_arr.data, [builder.add(p_row[r], k)]))
                    p_bk = builder.shuffle_vector(builder.insert_element(undef, p_bk, ir.Constant(ir.IntType(32), 0)),
                                                  undef, broadcast)
                    for c in range(vectors):
                        builder.store(builder.call(fma, [p_bk, w_k[c], builder.load(acc[r][c])]), acc[r][c])
            for r in range(rows):
                for c in range(vectors):
                    builder.store(builder.load(acc[r][c]), out_at[r][c], align=1)
            return context.get_dummy_value()
        return types.none(p, w_packed, out, b, v), codegen
    return tile


# Vectors per tile by its rows: the full tile keeps ROWS × VECTORS accumulators; the remainder tiles are made wider
# so that they still carry at least 8 independent FMA chains (an FMA's latency of 4 cycles × 2 FMA units), since a
# 1-row × 3-vector tile waits on its 3 chains: 1.8-2× slower per step at B = 1 (H = 64-256, AVX2).
HALF_VECTORS = 4           # HALF × 4 accumulators + 4 weight vectors + a broadcast fit 16 registers (AVX2)
ROW_VECTORS = 8
_tile_rows_wide, _tile_rows_one = _make_tile(ROWS, VECTORS), _make_tile(ROWS, 1)
_tile_half_4, _tile_half_2, _tile_half_1 = (_make_tile(HALF, n) for n in (HALF_VECTORS, 2, 1))
_tile_row_8, _tile_row_4, _tile_row_2, _tile_row_1 = (_make_tile(1, n) for n in (ROW_VECTORS, 4, 2, 1))


def empty(shape, dtype):
    """np.empty starting on a cache line (NumPy aligns to 16 bytes, numba to 32): a vector load of the tiles never
    straddles two lines, and a split of rows or of whole column vectors across threads never shares one."""
    dtype = np.dtype(dtype)
    size = math.prod(shape) * dtype.itemsize
    raw = np.empty(size + CACHE_LINE, dtype=np.uint8)
    start = -raw.ctypes.data % CACHE_LINE
    return raw[start:start + size].view(dtype).reshape(shape)


def zeros(shape, dtype):
    """np.zeros starting on a cache line (see ``empty``)."""
    out = empty(shape, dtype)
    out[...] = 0
    return out


def pack_columns(w):
    """w (K, N) → (N // LANES, K, LANES): its full column vectors, each contiguous along k (plain NumPy)."""
    K, N = w.shape
    lanes = VECTOR_BYTES // w.itemsize
    out = empty((N // lanes, K, lanes), w.dtype)
    out[...] = w[:, :N - N % lanes].reshape(K, N // lanes, lanes).transpose(1, 0, 2)
    return out


def pack_for_tiles(w):
    """(pack_columns(w), m) for the tiles' product by w (K, N): m = wᵀ (N, K) when N % LANES units are left to
    dot products, else an empty (0, K), which the tiles never read (saves a copy of w per call)."""
    K, N = w.shape
    m = transposed(w) if N % (VECTOR_BYTES // w.itemsize) else empty((0, K), w.dtype)
    return pack_columns(w), m


def transposed(w):
    """wᵀ (N, K) contiguous, for w (K, N): in 16×64 blocks, 4-9× faster than NumPy's copy at H = 1024-1760."""
    # NumPy copies w.T element by element down columns 4 KiB apart at H=1024, which thrash one cache set.
    return _transpose_into(w, empty(w.shape[::-1], w.dtype))


@serial
def _transpose_into(w, out):
    """out[j, i] = w[i, j], block by block."""
    K, N = w.shape
    for i0 in range(0, K, 16):
        for j0 in range(0, N, 64):
            for j in range(j0, min(N, j0 + 64)):
                for i in range(i0, min(K, i0 + 16)):
                    out[j, i] = w[i, j]
    return out


def contiguous(m):
    """m C-contiguous: itself, or for the transpose of a C-contiguous array a copy by ``transposed``."""
    if m.flags.c_contiguous:
        return m
    return transposed(m.T) if m.T.flags.c_contiguous else np.ascontiguousarray(m)


@serial
def _dot_rows(p, m, out, b, j):
    """Rows b..b+3 × unit j, as dot products against m = wᵀ."""
    s0, s1, s2, s3 = out[b, j], out[b + 1, j], out[b + 2, j], out[b + 3, j]
    for k in range(p.shape[1]):
        w = m[j, k]
        s0 += p[b, k] * w
        s1 += p[b + 1, k] * w
        s2 += p[b + 2, k] * w
        s3 += p[b + 3, k] * w
    out[b, j], out[b + 1, j], out[b + 2, j], out[b + 3, j] = s0, s1, s2, s3


@serial
def _dot_row(p, m, out, b, j):
    """Row b × unit j, as a dot product against m = wᵀ."""
    s = out[b, j]
    for k in range(p.shape[1]):
        s += p[b, k] * m[j, k]
    out[b, j] = s


@serial
def _active(lengths, b, n, t):
    """Whether any of rows b..b+n-1 is still inside its length at step t."""
    for r in range(b, b + n):
        if t < lengths[r]:
            return True
    return False


@serial
def _tile(p, w_packed, out, b, v, rows, vectors):
    """The register tile of ``rows`` (ROWS, HALF or 1) rows × ``vectors`` column vectors at rows b, vector v."""
    if rows == ROWS:
        if vectors == VECTORS:
            _tile_rows_wide(p, w_packed, out, b, v)
        else:
            _tile_rows_one(p, w_packed, out, b, v)
    elif rows == HALF:
        if vectors == 4:
            _tile_half_4(p, w_packed, out, b, v)
        elif vectors == 2:
            _tile_half_2(p, w_packed, out, b, v)
        else:
            _tile_half_1(p, w_packed, out, b, v)
    elif vectors == 8:
        _tile_row_8(p, w_packed, out, b, v)
    elif vectors == 4:
        _tile_row_4(p, w_packed, out, b, v)
    elif vectors == 2:
        _tile_row_2(p, w_packed, out, b, v)
    else:
        _tile_row_1(p, w_packed, out, b, v)


@serial
def _rows_times_vectors(p, w_packed, out, lo, hi, rows, lengths, t, v_lo, v_hi):
    """out[b] += p[b]·w over w's column vectors v_lo..v_hi-1, rows lo..hi-1 (a multiple of ``rows``) in tiles of
    ``rows``."""
    width = VECTORS if rows == ROWS else HALF_VECTORS if rows == HALF else ROW_VECTORS
    v = v_lo
    while v < v_hi:
        while v + width > v_hi:
            width //= 2
        for b in range(lo, hi, rows):
            if _active(lengths, b, rows, t):
                _tile(p, w_packed, out, b, v, rows, width)
        v += width


@serial
def _rows_times_columns(p, w_packed, out, lo, hi, lengths, t, v_lo, v_hi):
    """out[b] += p[b]·w over w's column vectors v_lo..v_hi-1 for rows lo ≤ b < hi still inside their length."""
    # Units outermost within each group of tiles: a strip of weights is read once per step and reused by every
    # block of rows. Blocks of ROWS rows, then one of HALF, then single rows (each split of the rows across
    # threads is made of whole ROWS blocks, so a row always lands in the same kind of tile); every tile sums a unit
    # over k in the same order, so results depend neither on the blocking nor on a split of rows or columns.
    full = lo + (hi - lo) // ROWS * ROWS
    _rows_times_vectors(p, w_packed, out, lo, full, ROWS, lengths, t, v_lo, v_hi)
    b = full
    if b + HALF <= hi:
        _rows_times_vectors(p, w_packed, out, b, b + HALF, HALF, lengths, t, v_lo, v_hi)
        b += HALF
    _rows_times_vectors(p, w_packed, out, b, hi, 1, lengths, t, v_lo, v_hi)


@serial
def _rows_times_matrix(p, w_packed, m, out, lo, hi, lengths, t):
    """out[b] += p[b]·w for rows lo ≤ b < hi still inside their length at step t: p (B, K), m = wᵀ (N, K)."""
    _rows_times_columns(p, w_packed, out, lo, hi, lengths, t, 0, w_packed.shape[0])
    for j in range(w_packed.shape[0] * w_packed.shape[2], m.shape[0]):
        b = lo
        while b + 4 <= hi:
            if _active(lengths, b, 4, t):
                _dot_rows(p, m, out, b, j)
            b += 4
        while b < hi:
            if t < lengths[b]:
                _dot_row(p, m, out, b, j)
            b += 1


@serial
def _gates_product(p, w_packed, out, B, lengths, t, gates, v_lo, v_hi):
    """out ← p·w over the units of column vectors v_lo..v_hi-1 of each gate (w (K, gates·H), out (B, gates·H))."""
    lanes = w_packed.shape[2]
    gate_vectors = w_packed.shape[0] // gates
    for g in range(gates):
        lo, hi = g * gate_vectors + v_lo, g * gate_vectors + v_hi
        out[:, lo * lanes:hi * lanes] = 0
        _rows_times_columns(p, w_packed, out, 0, B, lengths, t, lo, hi)


# -- one barrier per step, for a split of the units -----------------------------------------------------
# With few batch rows a split of the rows leaves threads idle, so the units (W_A's column vectors) are split
# instead: every thread runs all rows for its own units, and all threads meet once per step, after which each
# reads the whole state just written. The barrier counts arrivals in sync[0] and releases by bumping a
# generation in sync[8] (a cache line apart); waiters spin with the CPU's pause hint and yield the core every
# SPINS rounds, so a part whose thread lost its core gets it back. Atomics are sequentially consistent, so every
# plain store before the barrier is visible after it. Only run under a threading layer that gives every part its
# own thread at once (OpenMP or workqueue, and parts ≤ numba's thread count; backend.py checks both).

X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86")
SPINS = 1 << 12


def _sync_slot(context, builder, array_type, array, index):
    """Pointer to element ``index`` of an int64 array in generated code."""
    data = context.make_array(array_type)(context, builder, array).data
    return builder.gep(data, [context.cast(builder, index[1], index[0], types.intp)])


def _int64_array(sync):
    return isinstance(sync, types.Array) and sync.dtype == types.int64


@intrinsic
def _atomic_add(typingctx, sync, index, value):
    """sync[index] += value atomically; returns the value before."""
    if not _int64_array(sync):
        return None

    def codegen(context, builder, signature, args):
        slot = _sync_slot(context, builder, signature.args[0], args[0], (signature.args[1], args[1]))
        value = context.cast(builder, args[2], signature.args[2], types.int64)
        return builder.atomic_rmw("add", slot, value, "seq_cst")
    return types.int64(sync, index, value), codegen


@intrinsic
def _atomic_load(typingctx, sync, index):
    """sync[index], read atomically."""
    if not _int64_array(sync):
        return None

    def codegen(context, builder, signature, args):
        slot = _sync_slot(context, builder, signature.args[0], args[0], (signature.args[1], args[1]))
        return builder.load_atomic(slot, "seq_cst", 8)
    return types.int64(sync, index), codegen


@intrinsic
def _atomic_store(typingctx, sync, index, value):
    """sync[index] = value, written atomically."""
    if not _int64_array(sync):
        return None

    def codegen(context, builder, signature, args):
        slot = _sync_slot(context, builder, signature.args[0], args[0], (signature.args[1], args[1]))
        builder.store_atomic(context.cast(builder, args[2], signature.args[2], types.int64), slot, "seq_cst", 8)
        return context.get_dummy_value()
    return types.none(sync, index, value), codegen


@intrinsic
def _spin_pause(typingctx):
    """The CPU's spin-wait hint (x86 ``pause``; nothing elsewhere)."""
    def codegen(context, builder, signature, args):
        if X86:
            builder.call(cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []),
                                                        "llvm.x86.sse2.pause"), [])
        return context.get_dummy_value()
    return types.none(), codegen


@intrinsic
def _sched_yield(typingctx):
    """sched_yield(): give the core to another runnable thread."""
    def codegen(context, builder, signature, args):
        builder.call(cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(32), []),
                                                    "sched_yield"), [])
        return context.get_dummy_value()
    return types.none(), codegen


@serial
def barrier(sync, parts):
    """Wait until all ``parts`` threads have arrived; sync is an int64 array of 16 zeros shared by them."""
    generation = _atomic_load(sync, 8)
    if _atomic_add(sync, 0, 1) == parts - 1:                   # the last to arrive resets and releases
        _atomic_store(sync, 0, 0)
        _atomic_add(sync, 8, 1)
    else:
        spins = 0
        while _atomic_load(sync, 8) == generation:
            _spin_pause()
            spins += 1
            if spins == SPINS:
                _sched_yield()
                spins = 0


@serial
def unit_range(part, parts, vectors, lanes):
    """(v_lo, v_hi, j_lo, j_hi): part's run of whole column vectors of W_A and the units they hold."""
    v_lo, v_hi = vectors * part // parts, vectors * (part + 1) // parts
    return v_lo, v_hi, v_lo * lanes, v_hi * lanes


# -- forward ----------------------------------------------------------------------------------------

@serial
def forward_rows(a, a0, w_a_packed, w_a_t, b_a, lengths, relu, lo, hi):
    """A_t = g(X_t·W_X + A_{t-1}·W_A + b_A) for rows lo..hi-1, in place in a (T, B, H); 0 past lengths."""
    T, B, H = a.shape
    for t in range(T):
        prev = a0 if t == 0 else a[t - 1]                        # A_{t-1} (B, H)
        out = a[t]                                               # X_t·W_X (B, H) → A_t
        for b in range(lo, hi):
            row = out[b]
            for j in range(H):
                row[j] += b_a[j]
        _rows_times_matrix(prev, w_a_packed, w_a_t, out, lo, hi, lengths, t)
        for b in range(lo, hi):
            if t < lengths[b]:
                _activate_row(out[b], relu)
            else:
                out[b, :] = 0


@parallel
def forward_rows_parallel(a, a0, w_a_packed, w_a_t, b_a, lengths, relu, n_chunks):
    """forward_rows with the batch rows split into n_chunks runs of whole register blocks, one per thread."""
    B = a.shape[1]
    blocks = (B + ROWS - 1) // ROWS
    for c in prange(n_chunks):
        lo = ROWS * (blocks * c // n_chunks)
        hi = min(B, ROWS * (blocks * (c + 1) // n_chunks))
        forward_rows(a, a0, w_a_packed, w_a_t, b_a, lengths, relu, lo, hi)


@parallel
def forward_columns_parallel(a, a0, w_a_packed, b_a, lengths, relu, parts, sync):
    """forward_rows with the units split into ``parts`` runs of whole column vectors (H a multiple of LANES), one
    per thread, every thread on all rows, one barrier per step."""
    T, B, H = a.shape
    for part in prange(parts):
        v_lo, v_hi, j_lo, j_hi = unit_range(part, parts, w_a_packed.shape[0], w_a_packed.shape[2])
        for t in range(T):
            prev = a0 if t == 0 else a[t - 1]                    # A_{t-1} (B, H), all units
            out = a[t]                                           # X_t·W_X (B, H) → A_t, own units
            for b in range(B):
                row = out[b]
                for j in range(j_lo, j_hi):
                    row[j] += b_a[j]
            _rows_times_columns(prev, w_a_packed, out, 0, B, lengths, t, v_lo, v_hi)
            for b in range(B):
                if t < lengths[b]:
                    _activate_row(out[b, j_lo:j_hi], relu)
                else:
                    out[b, j_lo:j_hi] = 0
            barrier(sync, parts)


@serial
def forward_step_finish(out, z_rec, b_a, lengths, t, relu):
    """A_t = g(out + z_rec + b_A) in place in out (B, H), 0 past lengths: the large-H step after BLAS."""
    # z_rec (B, H) may be a transposed view of the (H, B) BLAS product; numba compiles a strided variant.
    B, H = out.shape
    for b in range(B):
        row = out[b]
        if t < lengths[b]:
            rec = z_rec[b]
            for j in range(H):
                row[j] += b_a[j] + rec[j]
            _activate_row(row, relu)
        else:
            row[:] = 0


# -- backward ---------------------------------------------------------------------------------------

@serial
def backward_step_start(dz, d_a, d_a_n, d_next, a, lengths, t, relu, lo, hi):
    """dL/dZ_t = (dL/dA_t + dZ_{t+1}·W_Aᵀ) ⊙ g'(Z_t) for rows lo..hi-1."""
    # dz, d_a, d_next, a: (B, H) at step t; d_next may be a transposed view of the (H, B) BLAS product. d_a
    # counts only inside a row's length, d_a_n (B, H) at its end, where nothing arrives from later steps; past
    # the length dZ_t is 0.
    H = dz.shape[1]
    for b in range(lo, hi):
        dz_row, a_row = dz[b], a[b]
        if t < lengths[b]:
            d_a_row = d_a[b]
            arriving = d_a_n[b] if t == lengths[b] - 1 else d_next[b]
            if relu:
                for j in range(H):
                    dz_row[j] = (d_a_row[j] + arriving[j]) * (a_row[j] > 0)
            else:
                for j in range(H):
                    v = a_row[j]
                    dz_row[j] = (d_a_row[j] + arriving[j]) * (1 - v * v)
        else:
            dz_row[:] = 0


@serial
def backward_rows(dz, d_a, d_a_n, d_next, a, w_a_t_packed, w_a, lengths, relu, lo, hi):
    """BPTT for rows lo..hi-1: dz (T, B, H) ← dL/dZ_t; d_next (B, H), zero on entry, ends as dL/dA_0."""
    T = dz.shape[0]
    for t in range(T - 1, -1, -1):
        backward_step_start(dz[t], d_a[t], d_a_n, d_next, a[t], lengths, t, relu, lo, hi)
        d_next[lo:hi] = 0                                        # the product below accumulates into it
        _rows_times_matrix(dz[t], w_a_t_packed, w_a, d_next, lo, hi, lengths, t)  # dZ_t·W_Aᵀ: the sequential part


@parallel
def backward_rows_parallel(dz, d_a, d_a_n, d_next, a, w_a_t_packed, w_a, lengths, relu, n_chunks):
    """backward_rows with the batch rows split into n_chunks runs of whole register blocks, one per thread."""
    B = dz.shape[1]
    blocks = (B + ROWS - 1) // ROWS
    for c in prange(n_chunks):
        lo = ROWS * (blocks * c // n_chunks)
        hi = min(B, ROWS * (blocks * (c + 1) // n_chunks))
        backward_rows(dz, d_a, d_a_n, d_next, a, w_a_t_packed, w_a, lengths, relu, lo, hi)


@parallel
def backward_columns_parallel(dz, d_a, d_a_n, d_next, a, w_a_t_packed, lengths, relu, parts, sync):
    """backward_rows with the units split into ``parts`` runs of whole column vectors, one per thread: each
    computes dZ_t for its units, then, after the barrier, its units of dZ_t·W_Aᵀ from all of dZ_t."""
    T, B, H = dz.shape
    for part in prange(parts):
        v_lo, v_hi, j_lo, j_hi = unit_range(part, parts, w_a_t_packed.shape[0], w_a_t_packed.shape[2])
        for t in range(T - 1, -1, -1):
            backward_step_start(dz[t, :, j_lo:j_hi], d_a[t, :, j_lo:j_hi], d_a_n[:, j_lo:j_hi],
                                d_next[:, j_lo:j_hi], a[t, :, j_lo:j_hi], lengths, t, relu, 0, B)
            barrier(sync, parts)                                 # all of dZ_t written
            d_next[:, j_lo:j_hi] = 0
            _rows_times_columns(dz[t], w_a_t_packed, d_next, 0, B, lengths, t, v_lo, v_hi)


# == GRU and LSTM ====================================================================================
# z (T, B, G·H) holds X_t·W_X on entry to a forward chain and the gates after their nonlinearities on exit
# (G = 3, r u n, for GRU; G = 4, i f g o, for LSTM, PyTorch's orders); rec (B, G·H) is A_{t-1}·W_A of one
# step, without b_R; d_next (B, H) is the product dZ_R,t+1·W_Aᵀ arriving at step t. A step is the recurrent
# product of all G gates at once, (B, H)·(H, G·H), in the register tiles above (or one BLAS call, chosen in
# backend.py), then one pass over each valid row computing every gate, the state and what backward keeps, with
# sigmoid and tanh inlined so the pass vectorises. The row loops take any range lo..hi, so a split of the rows
# across threads changes no bit.

# -- sigmoid ----------------------------------------------------------------------------------------
# σ(x) = 1/(1 + e^-|x|) for x ≥ 0 and e^-|x|/(1 + e^-|x|) below, so it never divides by a huge e^|x| and keeps
# its relative accuracy down to σ's smallest normal values; e^-y = 2^n·e^r as in kernels.tanh (Cephes exp, expf),
# |x| capped where 2^n stays normal, and 0 beyond the cap on the negative side (there σ < the smallest normal).
# Branch-free (both sides computed, one selected), so loops over it vectorise. NaN stays NaN.

SIGMOID_CAP = np.float64(708.5)       # σ(-708.5) < 2^-1022, the smallest normal; 2^n ≥ 2^-1022
SIGMOIDF_CAP = np.float32(87.5)       # σ(-87.5) < 2^-126; 2^n ≥ 2^-126


def _sigmoid_f64(x):
    """σ of a float64, within a few ulp of 1/(1 + e^-x), branch-free."""
    z = abs(x)
    y = SIGMOID_CAP if z > SIGMOID_CAP else z                                 # NaN passes
    n = np.floor(y * -LOG2E + 0.5)
    r = (-y - n * LN2_HI) - n * LN2_LO
    rr = r * r
    p = r * ((EXP_P[0] * rr + EXP_P[1]) * rr + EXP_P[2])
    q = ((EXP_Q[0] * rr + EXP_Q[1]) * rr + EXP_Q[2]) * rr + EXP_Q[3]
    den = q - p                                                               # e^-y = num_e / den
    num_e = (q + p) * _pow2_f64(np.int64(n))
    num = den if x >= 0.0 else (0.0 if z > SIGMOID_CAP else num_e)
    return num / (den + num_e)


_ONE_F32, _ZERO_F32 = np.float32(1.0), np.float32(0.0)


def _sigmoid_f32(x):
    """σ of a float32, within a few ulp of 1/(1 + e^-x), branch-free."""
    z = abs(x)
    y = SIGMOIDF_CAP if z > SIGMOIDF_CAP else z
    n = np.floor(y * -LOG2EF + np.float32(0.5))
    r = (-y - n * LN2F_HI) - n * LN2F_LO
    poly = (((((EXPF_P[0] * r + EXPF_P[1]) * r + EXPF_P[2]) * r + EXPF_P[3]) * r + EXPF_P[4]) * r
            + EXPF_P[5])
    e = (r * r * poly + r + _ONE_F32) * _pow2_f32(np.int32(n))              # e^-|x|
    num = _ONE_F32 if x >= _ZERO_F32 else (_ZERO_F32 if z > SIGMOIDF_CAP else e)
    return num / (_ONE_F32 + e)


def sigmoid(x):
    """Vectorisable σ of a float32 or float64 scalar in njit code; NumPy's exp under NUMBA_DISABLE_JIT=1."""
    e = np.exp(-abs(x))
    return (np.ones_like(e) if x >= 0 else e) / (1 + e)


_overload_by_dtype(sigmoid, _sigmoid_f32, _sigmoid_f64)


@serial
def sigmoid_into(x, out):
    """out[...] = σ(x) elementwise (1-D arrays); the accuracy tests call this."""
    for i in range(x.shape[0]):
        out[i] = sigmoid(x[i])


# -- GRU --------------------------------------------------------------------------------------------

@serial
def gru_step(z_t, a_t, prev, rec, z_rn_t, b_a, b_r, lengths, t, lo, hi, j_lo, j_hi):
    """Gates and A_t of rows lo..hi-1, units j_lo..j_hi-1, at step t from X_t·W_X (z_t) and A_{t-1}·W_A (rec):
    z_t ← r, u, n."""
    # r = σ(Z_Xr + b_Ar + R_r + b_Rr), u likewise, n = tanh(Z_Xn + b_An + r ⊙ (R_n + b_Rn)) with R = rec,
    # A_t = (1 − u) ⊙ n + u ⊙ A_{t-1}; z_rn_t keeps R_n + b_Rn. z_t, a_t, prev (B, ·) at step t; rec may be a
    # transposed view of the (G·H, B) BLAS product. One view per gate, indexed from 0, so the loop vectorises.
    H = a_t.shape[1]
    one = a_t.dtype.type(1)
    r_, u_, n_ = slice(j_lo, j_hi), slice(H + j_lo, H + j_hi), slice(2 * H + j_lo, 2 * H + j_hi)
    b_ar, b_au, b_an, b_rr, b_ru, b_rn = b_a[r_], b_a[u_], b_a[n_], b_r[r_], b_r[u_], b_r[n_]
    for b in range(lo, hi):
        a_row = a_t[b, j_lo:j_hi]
        if t < lengths[b]:
            z_r, z_u, z_n, rec_r, rec_u, rec_n = z_t[b, r_], z_t[b, u_], z_t[b, n_], rec[b, r_], rec[b, u_], rec[b, n_]
            prev_row, z_rn_row = prev[b, j_lo:j_hi], z_rn_t[b, j_lo:j_hi]
            for j in range(j_hi - j_lo):
                r = sigmoid((z_r[j] + b_ar[j]) + (rec_r[j] + b_rr[j]))
                u = sigmoid((z_u[j] + b_au[j]) + (rec_u[j] + b_ru[j]))
                z_rn = rec_n[j] + b_rn[j]
                n = tanh((z_n[j] + b_an[j]) + r * z_rn)
                z_r[j], z_u[j], z_n[j], z_rn_row[j] = r, u, n, z_rn
                a_row[j] = (one - u) * n + u * prev_row[j]
        else:
            a_row[:] = 0


@serial
def gru_forward_rows(z, a, a0, z_rn, rec, w_a_packed, w_a_t, b_a, b_r, lengths, lo, hi):
    """The GRU chain for rows lo..hi-1 with the product in register tiles; rec (B, 3H) is scratch."""
    for t in range(z.shape[0]):
        prev = a0 if t == 0 else a[t - 1]                                     # A_{t-1} (B, H)
        rec[lo:hi] = 0
        _rows_times_matrix(prev, w_a_packed, w_a_t, rec, lo, hi, lengths, t)  # A_{t-1}·W_A, all gates
        gru_step(z[t], a[t], prev, rec, z_rn[t], b_a, b_r, lengths, t, lo, hi, 0, a.shape[2])


@parallel
def gru_forward_rows_parallel(z, a, a0, z_rn, rec, w_a_packed, w_a_t, b_a, b_r, lengths, n_chunks):
    """gru_forward_rows with the batch rows split into n_chunks runs of whole register blocks, one per thread."""
    B = a.shape[1]
    blocks = (B + ROWS - 1) // ROWS
    for c in prange(n_chunks):
        lo, hi = ROWS * (blocks * c // n_chunks), min(B, ROWS * (blocks * (c + 1) // n_chunks))
        gru_forward_rows(z, a, a0, z_rn, rec, w_a_packed, w_a_t, b_a, b_r, lengths, lo, hi)


@parallel
def gru_forward_columns_parallel(z, a, a0, z_rn, rec, w_a_packed, b_a, b_r, lengths, parts, sync):
    """gru_forward_rows with the units split into ``parts`` runs of whole column vectors (H a multiple of LANES),
    one per thread, every thread on all rows, one barrier per step."""
    T, B, H = a.shape
    lanes = w_a_packed.shape[2]
    for part in prange(parts):
        v_lo, v_hi, j_lo, j_hi = unit_range(part, parts, H // lanes, lanes)
        for t in range(T):
            prev = a0 if t == 0 else a[t - 1]                                 # A_{t-1} (B, H), all units
            _gates_product(prev, w_a_packed, rec, B, lengths, t, 3, v_lo, v_hi)   # own units of every gate
            gru_step(z[t], a[t], prev, rec, z_rn[t], b_a, b_r, lengths, t, 0, B, j_lo, j_hi)
            barrier(sync, parts)


@serial
def gru_backward_step(dz_x_t, dz_r_t, carry, d_next, d_a_t, d_a_n, gates_t, z_rn_t, prev, lengths, t, lo, hi, j_lo,
                      j_hi):
    """dZ_X, dZ_R of rows lo..hi-1, units j_lo..j_hi-1 (all their gates), at step t; carry ← the part u ⊙ dL/dA_t
    of dL/dA_{t-1} (the rest: d_next)."""
    # dL/dA_t = d_a + carry + d_next (d_a + dL/dA_n at a row's last step), then through A_t = (1 − u) n + u A_{t-1}.
    H = prev.shape[1]
    one = prev.dtype.type(1)
    r_, u_, n_ = slice(j_lo, j_hi), slice(H + j_lo, H + j_hi), slice(2 * H + j_lo, 2 * H + j_hi)
    for b in range(lo, hi):
        carry_row, dz_x, dz_r = carry[b, j_lo:j_hi], dz_x_t[b], dz_r_t[b]
        if t < lengths[b]:
            if t == lengths[b] - 1:                                           # nothing arrives from later steps
                carry_row[:] = d_a_n[b, j_lo:j_hi]
                d_next[b, j_lo:j_hi] = 0
            r_row, u_row, n_row = gates_t[b, r_], gates_t[b, u_], gates_t[b, n_]
            d_a_row, d_next_row, prev_row, z_rn_row = d_a_t[b, j_lo:j_hi], d_next[b, j_lo:j_hi], prev[b, j_lo:j_hi], \
                z_rn_t[b, j_lo:j_hi]
            dx_r, dx_u, dx_n, dr_r, dr_u, dr_n = dz_x[r_], dz_x[u_], dz_x[n_], dz_r[r_], dz_r[u_], dz_r[n_]
            for j in range(j_hi - j_lo):
                g = d_a_row[j] + (carry_row[j] + d_next_row[j])               # dL/dA_t
                r, u, n = r_row[j], u_row[j], n_row[j]
                dn = g * (one - u) * (one - n * n)
                du = g * (prev_row[j] - n) * u * (one - u)
                dr = dn * z_rn_row[j] * r * (one - r)
                dx_r[j], dx_u[j], dx_n[j] = dr, du, dn
                dr_r[j], dr_u[j], dr_n[j] = dr, du, dn * r
                carry_row[j] = g * u
        else:
            for gate in (r_, u_, n_):
                dz_x[gate] = 0
                dz_r[gate] = 0
            carry_row[:] = 0


@serial
def gru_backward_rows(dz_x, dz_r, carry, d_next, d_a, d_a_n, gates, z_rn, a, a0, w_a_t_packed, w_a, lengths, lo, hi):
    """GRU BPTT for rows lo..hi-1 with the product in register tiles; dL/dA_0 = carry + d_next on exit."""
    for t in range(dz_x.shape[0] - 1, -1, -1):
        prev = a0 if t == 0 else a[t - 1]
        gru_backward_step(dz_x[t], dz_r[t], carry, d_next, d_a[t], d_a_n, gates[t], z_rn[t], prev, lengths, t,
                          lo, hi, 0, a.shape[2])
        d_next[lo:hi] = 0
        _rows_times_matrix(dz_r[t], w_a_t_packed, w_a, d_next, lo, hi, lengths, t)   # dZ_R,t·W_Aᵀ


@parallel
def gru_backward_rows_parallel(dz_x, dz_r, carry, d_next, d_a, d_a_n, gates, z_rn, a, a0, w_a_t_packed, w_a,
                               lengths, n_chunks):
    """gru_backward_rows with the batch rows split into n_chunks runs of whole register blocks, one per thread."""
    B = a.shape[1]
    blocks = (B + ROWS - 1) // ROWS
    for c in prange(n_chunks):
        lo, hi = ROWS * (blocks * c // n_chunks), min(B, ROWS * (blocks * (c + 1) // n_chunks))
        gru_backward_rows(dz_x, dz_r, carry, d_next, d_a, d_a_n, gates, z_rn, a, a0, w_a_t_packed, w_a, lengths,
                          lo, hi)


@parallel
def gru_backward_columns_parallel(dz_x, dz_r, carry, d_next, d_a, d_a_n, gates, z_rn, a, a0, w_a_t_packed, lengths,
                                  parts, sync):
    """gru_backward_rows with the units split into ``parts`` runs, one per thread: each computes the gates'
    gradients of its units, then, after the barrier, its units of dZ_R,t·W_Aᵀ from all of dZ_R,t."""
    T, B, H = a.shape
    for part in prange(parts):
        v_lo, v_hi, j_lo, j_hi = unit_range(part, parts, w_a_t_packed.shape[0], w_a_t_packed.shape[2])
        for t in range(T - 1, -1, -1):
            prev = a0 if t == 0 else a[t - 1]
            gru_backward_step(dz_x[t], dz_r[t], carry, d_next, d_a[t], d_a_n, gates[t], z_rn[t], prev, lengths, t,
                              0, B, j_lo, j_hi)
            barrier(sync, parts)                                              # all of dZ_R,t written
            d_next[:, j_lo:j_hi] = 0
            _rows_times_columns(dz_r[t], w_a_t_packed, d_next, 0, B, lengths, t, v_lo, v_hi)


# -- LSTM -------------------------------------------------------------------------------------------

@serial
def lstm_step(z_t, a_t, c_t, c_prev, rec, bias, lengths, t, lo, hi, j_lo, j_hi):
    """Gates, C_t and A_t of rows lo..hi-1, units j_lo..j_hi-1, at step t: z_t ← i, f, g, o."""
    # i, f, o = σ(Z + b), g = tanh(Z + b) with Z = X_t·W_X + A_{t-1}·W_A (z_t + rec), b = b_A + b_R;
    # C_t = f ⊙ C_{t-1} + i ⊙ g, A_t = o ⊙ tanh(C_t). rec may be a transposed view of the BLAS product.
    # One view per gate, indexed from 0, so the loop vectorises.
    H = a_t.shape[1]
    i_, f_, g_, o_ = (slice(j_lo, j_hi), slice(H + j_lo, H + j_hi), slice(2 * H + j_lo, 2 * H + j_hi),
                      slice(3 * H + j_lo, 3 * H + j_hi))
    b_i, b_f, b_g, b_o = bias[i_], bias[f_], bias[g_], bias[o_]
    for b in range(lo, hi):
        a_row = a_t[b, j_lo:j_hi]
        if t < lengths[b]:
            z_i, z_f, z_g, z_o = z_t[b, i_], z_t[b, f_], z_t[b, g_], z_t[b, o_]
            r_i, r_f, r_g, r_o = rec[b, i_], rec[b, f_], rec[b, g_], rec[b, o_]
            c_row, c_prev_row = c_t[b, j_lo:j_hi], c_prev[b, j_lo:j_hi]
            for j in range(j_hi - j_lo):
                i = sigmoid(z_i[j] + (r_i[j] + b_i[j]))
                f = sigmoid(z_f[j] + (r_f[j] + b_f[j]))
                g = tanh(z_g[j] + (r_g[j] + b_g[j]))
                o = sigmoid(z_o[j] + (r_o[j] + b_o[j]))
                c = f * c_prev_row[j] + i * g
                z_i[j], z_f[j], z_g[j], z_o[j] = i, f, g, o
                c_row[j] = c
                a_row[j] = o * tanh(c)
        else:
            a_row[:] = 0


@serial
def lstm_forward_rows(z, a, c, a0, c0, rec, w_a_packed, w_a_t, bias, lengths, lo, hi):
    """The LSTM chain for rows lo..hi-1 with the product in register tiles; rec (B, 4H) is scratch."""
    for t in range(z.shape[0]):
        prev, c_prev = (a0, c0) if t == 0 else (a[t - 1], c[t - 1])          # A_{t-1}, C_{t-1} (B, H)
        rec[lo:hi] = 0
        _rows_times_matrix(prev, w_a_packed, w_a_t, rec, lo, hi, lengths, t)
        lstm_step(z[t], a[t], c[t], c_prev, rec, bias, lengths, t, lo, hi, 0, a.shape[2])


@parallel
def lstm_forward_rows_parallel(z, a, c, a0, c0, rec, w_a_packed, w_a_t, bias, lengths, n_chunks):
    """lstm_forward_rows with the batch rows split into n_chunks runs of whole register blocks, one per thread."""
    B = a.shape[1]
    blocks = (B + ROWS - 1) // ROWS
    for c_ in prange(n_chunks):
        lo, hi = ROWS * (blocks * c_ // n_chunks), min(B, ROWS * (blocks * (c_ + 1) // n_chunks))
        lstm_forward_rows(z, a, c, a0, c0, rec, w_a_packed, w_a_t, bias, lengths, lo, hi)


@parallel
def lstm_forward_columns_parallel(z, a, c, a0, c0, rec, w_a_packed, bias, lengths, parts, sync):
    """lstm_forward_rows with the units split into ``parts`` runs of whole column vectors (H a multiple of LANES),
    one per thread, every thread on all rows, one barrier per step."""
    T, B, H = a.shape
    lanes = w_a_packed.shape[2]
    for part in prange(parts):
        v_lo, v_hi, j_lo, j_hi = unit_range(part, parts, H // lanes, lanes)
        for t in range(T):
            prev, c_prev = (a0, c0) if t == 0 else (a[t - 1], c[t - 1])      # A_{t-1}, C_{t-1} (B, H)
            _gates_product(prev, w_a_packed, rec, B, lengths, t, 4, v_lo, v_hi)   # own units of every gate
            lstm_step(z[t], a[t], c[t], c_prev, rec, bias, lengths, t, 0, B, j_lo, j_hi)
            barrier(sync, parts)


@serial
def lstm_backward_step(dz_t, carry_c, d_next, d_a_t, d_a_n, d_c_n, gates_t, c_t, c_prev, lengths, t, lo, hi, j_lo,
                       j_hi):
    """dZ of rows lo..hi-1, units j_lo..j_hi-1 (all their gates), at step t; carry_c ← dL/dC_{t-1} (dL/dA_{t-1} is
    d_next after the product)."""
    H = c_t.shape[1]
    one = c_t.dtype.type(1)
    i_, f_, g_, o_ = (slice(j_lo, j_hi), slice(H + j_lo, H + j_hi), slice(2 * H + j_lo, 2 * H + j_hi),
                      slice(3 * H + j_lo, 3 * H + j_hi))
    for b in range(lo, hi):
        carry_c_row, dz = carry_c[b, j_lo:j_hi], dz_t[b]
        if t < lengths[b]:
            if t == lengths[b] - 1:                                           # the final states' gradients
                carry_c_row[:] = d_c_n[b, j_lo:j_hi]
                d_next[b, j_lo:j_hi] = d_a_n[b, j_lo:j_hi]
            i_row, f_row, g_row, o_row = gates_t[b, i_], gates_t[b, f_], gates_t[b, g_], gates_t[b, o_]
            d_a_row, d_next_row, c_row, c_prev_row = d_a_t[b, j_lo:j_hi], d_next[b, j_lo:j_hi], c_t[b, j_lo:j_hi], \
                c_prev[b, j_lo:j_hi]
            dz_i, dz_f, dz_g, dz_o = dz[i_], dz[f_], dz[g_], dz[o_]
            for j in range(j_hi - j_lo):
                g_a = d_a_row[j] + d_next_row[j]                              # dL/dA_t
                i, f, g, o = i_row[j], f_row[j], g_row[j], o_row[j]
                tanh_c = tanh(c_row[j])
                g_c = g_a * o * (one - tanh_c * tanh_c) + carry_c_row[j]      # dL/dC_t
                dz_i[j] = g_c * g * i * (one - i)
                dz_f[j] = g_c * c_prev_row[j] * f * (one - f)
                dz_g[j] = g_c * i * (one - g * g)
                dz_o[j] = g_a * tanh_c * o * (one - o)
                carry_c_row[j] = g_c * f
        else:
            for gate in (i_, f_, g_, o_):
                dz[gate] = 0
            carry_c_row[:] = 0


@serial
def lstm_backward_rows(dz, carry_c, d_next, d_a, d_a_n, d_c_n, gates, c, c0, w_a_t_packed, w_a, lengths, lo, hi):
    """LSTM BPTT for rows lo..hi-1 with the product in register tiles; d_next ends as dL/dA_0, carry_c dL/dC_0."""
    for t in range(dz.shape[0] - 1, -1, -1):
        c_prev = c0 if t == 0 else c[t - 1]
        lstm_backward_step(dz[t], carry_c, d_next, d_a[t], d_a_n, d_c_n, gates[t], c[t], c_prev, lengths, t, lo, hi,
                           0, dz.shape[2] // 4)
        d_next[lo:hi] = 0
        _rows_times_matrix(dz[t], w_a_t_packed, w_a, d_next, lo, hi, lengths, t)     # dZ_t·W_Aᵀ


@parallel
def lstm_backward_rows_parallel(dz, carry_c, d_next, d_a, d_a_n, d_c_n, gates, c, c0, w_a_t_packed, w_a, lengths,
                                n_chunks):
    """lstm_backward_rows with the batch rows split into n_chunks runs of whole register blocks, one per thread."""
    B = dz.shape[1]
    blocks = (B + ROWS - 1) // ROWS
    for c_ in prange(n_chunks):
        lo, hi = ROWS * (blocks * c_ // n_chunks), min(B, ROWS * (blocks * (c_ + 1) // n_chunks))
        lstm_backward_rows(dz, carry_c, d_next, d_a, d_a_n, d_c_n, gates, c, c0, w_a_t_packed, w_a, lengths, lo, hi)


@parallel
def lstm_backward_columns_parallel(dz, carry_c, d_next, d_a, d_a_n, d_c_n, gates, c, c0, w_a_t_packed, lengths, parts,
                                   sync):
    """lstm_backward_rows with the units split into ``parts`` runs, one per thread: each computes the gates'
    gradients of its units, then, after the barrier, its units of dZ_t·W_Aᵀ from all of dZ_t."""
    T, B, H = c.shape
    for part in prange(parts):
        v_lo, v_hi, j_lo, j_hi = unit_range(part, parts, w_a_t_packed.shape[0], w_a_t_packed.shape[2])
        for t in range(T - 1, -1, -1):
            c_prev = c0 if t == 0 else c[t - 1]
            lstm_backward_step(dz[t], carry_c, d_next, d_a[t], d_a_n, d_c_n, gates[t], c[t], c_prev, lengths, t, 0, B,
                               j_lo, j_hi)
            barrier(sync, parts)                                              # all of dZ_t written
            d_next[:, j_lo:j_hi] = 0
            _rows_times_columns(dz[t], w_a_t_packed, d_next, 0, B, lengths, t, v_lo, v_hi)
