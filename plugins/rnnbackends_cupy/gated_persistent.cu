// The GRU and LSTM chains as persistent kernels (small batches): one cooperative launch for all T steps;
// block i keeps its slice of W_A (H, G·H) in shared memory, for all G gates, for every step, and the grid
// meets at one grid-wide barrier per step. Lengths in-kernel: past a row's length its A_t is 0 and it computes
// nothing (its state is frozen, so the host reads the final state at the row's last step). CPU reference:
// rnnbackends/reference.py (gru_/lstm_forward_chain, gru_/lstm_backward_chain); checks: tests/cupy/.
//
// Forward, per step: block i owns H-columns [i*cols, i*cols + cols) of every gate; a work item (persistent.cuh)
// computes the G recurrent products of its column in one pass, so the gate math of (b, j) is done by the lane
// that holds them. Shared memory: W slice (G·cols, H) then the staged state A_{t-1} (B, H).
// Backward, per step: block i owns rows k of W_A (columns of W_Aᵀ, all G·H wide); Σ_j dZ_R,t+1[b, j]·W_A[k, j]
// is one item_dot over G·H, and the lane of (b, k) computes the G gate gradients of column k. Shared memory:
// W slice (cols, G·H) then the staged dZ_R,t+1 (B, G·H). Gates are side by side in PyTorch's order.
#include "persistent.cuh"
#include "rnn_math.cuh"

// Copies the block's W_A slice in, for the forward's layout: row g·nj + jj holds W_A[:, g·H + j0 + jj].
template <int G, typename T>
__device__ __forceinline__ void load_gate_columns(T* w_s, const T* w_a, int j0, int nj, int H) {
    for (int i = threadIdx.x; i < G * nj * H; i += blockDim.x) {
        const int row = i / H, k = i % H, g = row / nj, jj = row % nj;
        w_s[i] = w_a[static_cast<long long>(k) * G * H + g * H + j0 + jj];
    }
}

// GRU: r, u = σ(Z_X + Z_R), n = tanh(Z_Xn + r ⊙ Z_Rn), A_t = (1 − u) ⊙ n + u ⊙ A_{t-1}, where
// Z_X = X_t·W_X + b_A (given) and Z_R = A_{t-1}·W_A + b_R; saves r, u, n, Z_Rn for the backward.
template <typename T>
__global__ void gru_forward_persistent(const T* __restrict__ zx,       // (T, B, 3H)  X_t·W_X + b_A
                                       const T* __restrict__ a0,       // (B, H)      A_0
                                       const T* __restrict__ w_a,      // (H, 3H)     W_A
                                       const T* __restrict__ b_r,      // (3H,)       b_R
                                       const int* __restrict__ lengths,  // (B,)
                                       T* __restrict__ a,              // (T, B, H)   A_1..A_T (out)
                                       T* __restrict__ saved,          // (T, B, 4H)  r, u, n, Z_Rn (out)
                                       int steps, int B, int H, int cols) {
    constexpr int G = 3;
    RNNB_DYNAMIC_SHARED(T, smem);
    T* w_s = smem;                 // (G·nj, H)
    T* a_s = smem + G * cols * H;  // (B, H): A_{t-1}
    const int j0 = blockIdx.x * cols, nj = min(cols, H - j0);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    const int items = nj * ((B + ROWS - 1) / ROWS);
    load_gate_columns<G>(w_s, w_a, j0, nj, H);
    for (int t = 0; t < steps; ++t) {
        const T* a_prev = t == 0 ? a0 : a + static_cast<long long>(t - 1) * B * H;
        for (int i = threadIdx.x; i < B * H; i += blockDim.x) a_s[i] = a_prev[i];
        __syncthreads();
        for (int item = warp; item < items; item += nwarps) {
            const int jj = item % nj, b0 = (item / nj) * ROWS, j = j0 + jj;
            T acc[G][ROWS];
            item_gate_dots<G>(w_s, a_s, jj, nj, b0, B, H, lane, acc);
            RNNB_UNROLL for (int r = 0; r < ROWS; ++r) {
                const int b = b0 + r;
                if (lane != r || b >= B) continue;
                const long long row = static_cast<long long>(t) * B + b;
                if (t >= lengths[b]) {
                    a[row * H + j] = T(0);
                    continue;
                }
                const T* z = zx + row * G * H;
                const T z_rn = acc[2][r] + b_r[2 * H + j];
                const T rg = sigmoid(z[j] + acc[0][r] + b_r[j]);
                const T ug = sigmoid(z[H + j] + acc[1][r] + b_r[H + j]);
                const T ng = tanh(z[2 * H + j] + rg * z_rn);
                a[row * H + j] = (T(1) - ug) * ng + ug * a_s[b * H + j];
                T* s = saved + row * 4 * H;
                s[j] = rg, s[H + j] = ug, s[2 * H + j] = ng, s[3 * H + j] = z_rn;
            }
        }
        rnnb::grid_sync();  // A_t complete in every block before any block reads it
    }
}
RNNB_EXPORT_KERNEL(gru_forward_persistent)

// GRU backward: with g = dL/dA_t (+ dL/dA_n at the row's last step) + (g ⊙ u)_{t+1} + dZ_R,t+1·W_Aᵀ,
// dn = g ⊙ (1 − u) ⊙ (1 − n²), du = g ⊙ (A_{t-1} − n) ⊙ u(1 − u), dr = dn ⊙ Z_Rn ⊙ r(1 − r);
// dZ_X = [dr, du, dn], dZ_R = [dr, du, dn ⊙ r]; 0 on padding (d_a never read there). d_a0 holds (g ⊙ u)_t of
// each (b, k) between steps (read and written by the same lane) and dA_0 = (g ⊙ u)_1 + dZ_R,1·W_Aᵀ at the end.
template <typename T>
__global__ void gru_backward_persistent(const T* __restrict__ d_a,     // (T, B, H)   dL/dA_t
                                        const T* __restrict__ d_a_n,   // (B, H)      dL/dA_n
                                        const T* __restrict__ a,       // (T, B, H)   A_1..A_T
                                        const T* __restrict__ a0,      // (B, H)      A_0
                                        const T* __restrict__ w_a,     // (H, 3H)     W_A
                                        const T* __restrict__ saved,   // (T, B, 4H)  r, u, n, Z_Rn
                                        const int* __restrict__ lengths,  // (B,)
                                        T* __restrict__ dz_x,          // (T, B, 3H)  dL/dZ_X (out)
                                        T* __restrict__ dz_r,          // (T, B, 3H)  dL/dZ_R (out)
                                        T* __restrict__ d_a0,          // (B, H)      dL/dA_0 (out)
                                        int steps, int B, int H, int cols) {
    constexpr int G = 3;
    RNNB_DYNAMIC_SHARED(T, smem);
    T* w_s = smem;                 // (nk, 3H): W_A[k0 + kk, :] as row kk
    T* d_s = smem + G * cols * H;  // (B, 3H): dZ_R,t+1
    const int k0 = blockIdx.x * cols, nk = min(cols, H - k0);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    const int items = nk * ((B + ROWS - 1) / ROWS);
    for (int i = threadIdx.x; i < nk * G * H; i += blockDim.x) w_s[i] = w_a[static_cast<long long>(k0) * G * H + i];
    for (int t = steps - 1; t >= -1; --t) {
        const T* next = dz_r + static_cast<long long>(t + 1) * B * G * H;
        for (int i = threadIdx.x; i < B * G * H; i += blockDim.x) d_s[i] = t + 1 < steps ? next[i] : T(0);
        __syncthreads();
        for (int item = warp; item < items; item += nwarps) {
            const int kk = item % nk, b0 = (item / nk) * ROWS, k = k0 + kk;
            T acc[ROWS];
            item_dot(w_s, d_s, kk, b0, B, G * H, lane, acc);
            RNNB_UNROLL for (int r = 0; r < ROWS; ++r) {
                const int b = b0 + r;
                if (lane != r || b >= B) continue;
                const T carry = (t + 1 < steps ? d_a0[b * H + k] : T(0)) + acc[r];  // dL/dA_t from step t+1
                if (t < 0) {
                    d_a0[b * H + k] = carry;
                    continue;
                }
                const long long row = static_cast<long long>(t) * B + b;
                T dr = T(0), du = T(0), dn = T(0), rg = T(0), keep = T(0);
                if (t < lengths[b]) {
                    const T* s = saved + row * 4 * H;
                    rg = s[k];
                    const T ug = s[H + k], ng = s[2 * H + k], z_rn = s[3 * H + k];
                    const T a_prev = t ? a[(row - B) * H + k] : a0[b * H + k];
                    T g = d_a[row * H + k] + carry;
                    if (t == lengths[b] - 1) g += d_a_n[b * H + k];
                    dn = g * (T(1) - ug) * (T(1) - ng * ng);
                    du = g * (a_prev - ng) * ug * (T(1) - ug);
                    dr = dn * z_rn * rg * (T(1) - rg);
                    keep = g * ug;
                }
                T* x = dz_x + row * G * H;
                T* y = dz_r + row * G * H;
                x[k] = dr, x[H + k] = du, x[2 * H + k] = dn;
                y[k] = dr, y[H + k] = du, y[2 * H + k] = dn * rg;
                d_a0[b * H + k] = keep;
            }
        }
        rnnb::grid_sync();  // dZ_R,t complete in every block before any block reads it
    }
}
RNNB_EXPORT_KERNEL(gru_backward_persistent)

// LSTM: i, f, o = σ(·), g = tanh(·) of Z_X + A_{t-1}·W_A + b_R; C_t = f ⊙ C_{t-1} + i ⊙ g, A_t = o ⊙ tanh(C_t).
// Saves the gates after their nonlinearities and C_t (0 on padding; the host reads C_n at each row's last step).
template <typename T>
__global__ void lstm_forward_persistent(const T* __restrict__ zx,      // (T, B, 4H)  X_t·W_X + b_A
                                        const T* __restrict__ a0,      // (B, H)      A_0
                                        const T* __restrict__ c0,      // (B, H)      C_0
                                        const T* __restrict__ w_a,     // (H, 4H)     W_A
                                        const T* __restrict__ b_r,     // (4H,)       b_R
                                        const int* __restrict__ lengths,  // (B,)
                                        T* __restrict__ a,             // (T, B, H)   A_1..A_T (out)
                                        T* __restrict__ c,             // (T, B, H)   C_1..C_T (out)
                                        T* __restrict__ gates,         // (T, B, 4H)  i, f, g, o (out)
                                        int steps, int B, int H, int cols) {
    constexpr int G = 4;
    RNNB_DYNAMIC_SHARED(T, smem);
    T* w_s = smem;                 // (G·nj, H)
    T* a_s = smem + G * cols * H;  // (B, H): A_{t-1}
    const int j0 = blockIdx.x * cols, nj = min(cols, H - j0);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    const int items = nj * ((B + ROWS - 1) / ROWS);
    load_gate_columns<G>(w_s, w_a, j0, nj, H);
    for (int t = 0; t < steps; ++t) {
        const T* a_prev = t == 0 ? a0 : a + static_cast<long long>(t - 1) * B * H;
        for (int i = threadIdx.x; i < B * H; i += blockDim.x) a_s[i] = a_prev[i];
        __syncthreads();
        for (int item = warp; item < items; item += nwarps) {
            const int jj = item % nj, b0 = (item / nj) * ROWS, j = j0 + jj;
            T acc[G][ROWS];
            item_gate_dots<G>(w_s, a_s, jj, nj, b0, B, H, lane, acc);
            RNNB_UNROLL for (int r = 0; r < ROWS; ++r) {
                const int b = b0 + r;
                if (lane != r || b >= B) continue;
                const long long row = static_cast<long long>(t) * B + b;
                if (t >= lengths[b]) {
                    a[row * H + j] = T(0), c[row * H + j] = T(0);
                    continue;
                }
                const T* z = zx + row * G * H;
                const T ig = sigmoid(z[j] + acc[0][r] + b_r[j]);
                const T fg = sigmoid(z[H + j] + acc[1][r] + b_r[H + j]);
                const T gg = tanh(z[2 * H + j] + acc[2][r] + b_r[2 * H + j]);
                const T og = sigmoid(z[3 * H + j] + acc[3][r] + b_r[3 * H + j]);
                const T c_prev = t ? c[(row - B) * H + j] : c0[b * H + j];  // this lane wrote it at t - 1
                const T c_t = fg * c_prev + ig * gg;
                c[row * H + j] = c_t;
                a[row * H + j] = og * tanh(c_t);
                T* s = gates + row * G * H;
                s[j] = ig, s[H + j] = fg, s[2 * H + j] = gg, s[3 * H + j] = og;
            }
        }
        rnnb::grid_sync();  // A_t complete in every block before any block reads it
    }
}
RNNB_EXPORT_KERNEL(lstm_forward_persistent)

// LSTM backward: g_A = dL/dA_t (+ dL/dA_n at the row's last step) + dZ_t+1·W_Aᵀ,
// g_C = g_A ⊙ o ⊙ (1 − tanh²C_t) + (g_C ⊙ f)_{t+1} (+ dL/dC_n at the last step);
// dZ = [g_C ⊙ g ⊙ i(1 − i), g_C ⊙ C_{t-1} ⊙ f(1 − f), g_C ⊙ i ⊙ (1 − g²), g_A ⊙ tanh C_t ⊙ o(1 − o)], 0 on
// padding. d_c0 holds (g_C ⊙ f)_t of each (b, k) between steps (same lane), which is dC_0 at the end.
template <typename T>
__global__ void lstm_backward_persistent(const T* __restrict__ d_a,     // (T, B, H)   dL/dA_t
                                         const T* __restrict__ d_a_n,   // (B, H)      dL/dA_n
                                         const T* __restrict__ d_c_n,   // (B, H)      dL/dC_n
                                         const T* __restrict__ c,       // (T, B, H)   C_1..C_T
                                         const T* __restrict__ c0,      // (B, H)      C_0
                                         const T* __restrict__ w_a,     // (H, 4H)     W_A
                                         const T* __restrict__ gates,   // (T, B, 4H)  i, f, g, o
                                         const int* __restrict__ lengths,  // (B,)
                                         T* __restrict__ dz,            // (T, B, 4H)  dL/dZ (out)
                                         T* __restrict__ d_a0,          // (B, H)      dL/dA_0 (out)
                                         T* __restrict__ d_c0,          // (B, H)      dL/dC_0 (out)
                                         int steps, int B, int H, int cols) {
    constexpr int G = 4;
    RNNB_DYNAMIC_SHARED(T, smem);
    T* w_s = smem;                 // (nk, 4H): W_A[k0 + kk, :] as row kk
    T* d_s = smem + G * cols * H;  // (B, 4H): dZ_t+1
    const int k0 = blockIdx.x * cols, nk = min(cols, H - k0);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    const int items = nk * ((B + ROWS - 1) / ROWS);
    for (int i = threadIdx.x; i < nk * G * H; i += blockDim.x) w_s[i] = w_a[static_cast<long long>(k0) * G * H + i];
    for (int t = steps - 1; t >= -1; --t) {
        const T* next = dz + static_cast<long long>(t + 1) * B * G * H;
        for (int i = threadIdx.x; i < B * G * H; i += blockDim.x) d_s[i] = t + 1 < steps ? next[i] : T(0);
        __syncthreads();
        for (int item = warp; item < items; item += nwarps) {
            const int kk = item % nk, b0 = (item / nk) * ROWS, k = k0 + kk;
            T acc[ROWS];
            item_dot(w_s, d_s, kk, b0, B, G * H, lane, acc);
            RNNB_UNROLL for (int r = 0; r < ROWS; ++r) {
                const int b = b0 + r;
                if (lane != r || b >= B) continue;
                const T carry_c = t + 1 < steps ? d_c0[b * H + k] : T(0);  // dL/dC_t from step t+1
                if (t < 0) {
                    d_a0[b * H + k] = acc[r];
                    d_c0[b * H + k] = carry_c;
                    continue;
                }
                const long long row = static_cast<long long>(t) * B + b;
                T di = T(0), df = T(0), dg = T(0), d_o = T(0), keep = T(0);
                if (t < lengths[b]) {
                    const T* s = gates + row * G * H;
                    const T ig = s[k], fg = s[H + k], gg = s[2 * H + k], og = s[3 * H + k];
                    const T c_t = c[row * H + k], c_prev = t ? c[(row - B) * H + k] : c0[b * H + k];
                    const T tanh_c = tanh(c_t);
                    T g_a = d_a[row * H + k] + acc[r];
                    T g_c = carry_c;
                    if (t == lengths[b] - 1) g_a += d_a_n[b * H + k], g_c += d_c_n[b * H + k];
                    g_c += g_a * og * (T(1) - tanh_c * tanh_c);
                    di = g_c * gg * ig * (T(1) - ig);
                    df = g_c * c_prev * fg * (T(1) - fg);
                    dg = g_c * ig * (T(1) - gg * gg);
                    d_o = g_a * tanh_c * og * (T(1) - og);
                    keep = g_c * fg;
                }
                T* x = dz + row * G * H;
                x[k] = di, x[H + k] = df, x[2 * H + k] = dg, x[3 * H + k] = d_o;
                d_c0[b * H + k] = keep;
            }
        }
        rnnb::grid_sync();  // dZ_t complete in every block before any block reads it
    }
}
RNNB_EXPORT_KERNEL(lstm_backward_persistent)
