// The A-chain as one persistent kernel per sequence (small batches): launched once for all T steps with a
// cooperative launch; block i keeps its slice of W_A in shared memory for every step and the grid meets at
// one grid-wide barrier per step. Lengths are handled in-kernel. CPU reference:
// rnnbackends/reference.py (rnn_forward_chain, rnn_backward_chain); checks: tests/cupy/test_emulator.py.
//
// Work split, per step: block i owns H-columns [i*cols, i*cols + cols) of the product (B, H)·(H, H), in work
// items of persistent.cuh. Shared memory: W slice (cols, H) then the staged state (B, H).
#include "persistent.cuh"
#include "rnn_math.cuh"

// A_t[b, j] = g(ZX_t[b, j] + Σ_k A_{t-1}[b, k]·W_A[k, j]) for t < lengths[b], else 0; all T steps.
template <typename T>
__global__ void rnn_forward_persistent(const T* __restrict__ zx,      // (T, B, H)  X_t·W_X + b_A
                                       const T* __restrict__ a0,      // (B, H)     A_0
                                       const T* __restrict__ w_a,     // (H, H)     W_A
                                       const int* __restrict__ lengths,  // (B,)
                                       T* __restrict__ a,             // (T, B, H)  A_1..A_T (out)
                                       int steps, int B, int H, int cols, int relu) {
    RNNB_DYNAMIC_SHARED(T, smem);
    T* w_s = smem;             // (cols, H): W_A[:, j0 + jj] as row jj
    T* a_s = smem + cols * H;  // (B, H): A_{t-1}
    const int j0 = blockIdx.x * cols;
    const int nj = min(cols, H - j0);
    const int tid = threadIdx.x, nthreads = blockDim.x;
    const int lane = tid & 31, warp = tid >> 5, nwarps = nthreads >> 5;
    const int items = nj * ((B + ROWS - 1) / ROWS);
    for (int i = tid; i < nj * H; i += nthreads) w_s[i] = w_a[(i % H) * H + j0 + i / H];
    for (int t = 0; t < steps; ++t) {
        const T* a_prev = t == 0 ? a0 : a + static_cast<long long>(t - 1) * B * H;
        for (int i = tid; i < B * H; i += nthreads) a_s[i] = a_prev[i];
        __syncthreads();
        for (int item = warp; item < items; item += nwarps) {
            const int jj = item % nj, b0 = (item / nj) * ROWS;
            T acc[ROWS];
            item_dot(w_s, a_s, jj, b0, B, H, lane, acc);
            RNNB_UNROLL for (int r = 0; r < ROWS; ++r) {
                const int b = b0 + r;
                if (lane == r && b < B) {
                    const long long o = (static_cast<long long>(t) * B + b) * H + j0 + jj;
                    a[o] = t < lengths[b] ? activate(zx[o] + acc[r], relu) : T(0);
                }
            }
        }
        rnnb::grid_sync();  // A_t complete in every block before any block reads it
    }
}
RNNB_EXPORT_KERNEL(rnn_forward_persistent)

// dZ_t[b, k] = (dL/dA_t[b, k] + [t = lengths[b]-1]·dL/dA_n[b, k] + Σ_j dZ_{t+1}[b, j]·W_A[k, j]) · g'(A_t[b, k])
// for t < lengths[b], else 0 (d_a is never read there); after the loop dA_0 = dZ_1·W_Aᵀ. Block i owns
// rows k of W_A (columns of W_Aᵀ).
template <typename T>
__global__ void rnn_backward_persistent(const T* __restrict__ d_a,     // (T, B, H)  dL/dA_t
                                        const T* __restrict__ d_a_n,   // (B, H)     dL/dA_n
                                        const T* __restrict__ a,       // (T, B, H)  A_1..A_T
                                        const T* __restrict__ w_a,     // (H, H)     W_A
                                        const int* __restrict__ lengths,  // (B,)
                                        T* __restrict__ dz,            // (T, B, H)  dL/dZ_t (out)
                                        T* __restrict__ d_a0,          // (B, H)     dL/dA_0 (out)
                                        int steps, int B, int H, int cols, int relu) {
    RNNB_DYNAMIC_SHARED(T, smem);
    T* w_s = smem;             // (cols, H): W_A[k0 + kk, :] as row kk
    T* d_s = smem + cols * H;  // (B, H): dZ_{t+1}
    const int k0 = blockIdx.x * cols;
    const int nk = min(cols, H - k0);
    const int tid = threadIdx.x, nthreads = blockDim.x;
    const int lane = tid & 31, warp = tid >> 5, nwarps = nthreads >> 5;
    const int items = nk * ((B + ROWS - 1) / ROWS);
    for (int i = tid; i < nk * H; i += nthreads) w_s[i] = w_a[static_cast<long long>(k0) * H + i];
    for (int t = steps - 1; t >= -1; --t) {
        const T* dz_next = dz + static_cast<long long>(t + 1) * B * H;
        for (int i = tid; i < B * H; i += nthreads) d_s[i] = t + 1 < steps ? dz_next[i] : T(0);
        __syncthreads();
        for (int item = warp; item < items; item += nwarps) {
            const int kk = item % nk, b0 = (item / nk) * ROWS;
            T acc[ROWS];
            item_dot(w_s, d_s, kk, b0, B, H, lane, acc);
            RNNB_UNROLL for (int r = 0; r < ROWS; ++r) {
                const int b = b0 + r;
                if (lane != r || b >= B) continue;
                const int k = k0 + kk;
                if (t < 0) {
                    d_a0[b * H + k] = acc[r];
                    continue;
                }
                const long long o = (static_cast<long long>(t) * B + b) * H + k;
                T g = T(0);
                if (t < lengths[b]) {
                    g = d_a[o];
                    if (t == lengths[b] - 1) g += d_a_n[b * H + k];
                    g = (g + acc[r]) * activation_grad(a[o], relu);
                }
                dz[o] = g;
            }
        }
        rnnb::grid_sync();  // dZ_t complete in every block before any block reads it
    }
}
RNNB_EXPORT_KERNEL(rnn_backward_persistent)
