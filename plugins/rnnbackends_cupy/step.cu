// The A-chain one step at a time (large batches, or W_A too big for on-chip): per step one cuBLAS GEMM
// (R = A_{t-1}·W_A forward, D = dZ_{t+1}·W_Aᵀ backward) and one of these fused elementwise kernels; the
// host captures the whole loop in a CUDA graph. CPU reference: rnnbackends/reference.py
// (rnn_forward_chain, rnn_backward_chain); checks: tests/cupy/test_emulator.py. One thread per (b, j), grid-stride.
#include "cuda_compat.cuh"
#include "rnn_math.cuh"

// A_t[b, j] = g(ZX_t[b, j] + R[b, j]) for t < lengths[b], else 0.
template <typename T>
__global__ void rnn_forward_step(const T* __restrict__ zx_t,      // (B, H)  X_t·W_X + b_A
                                 const T* __restrict__ r,         // (B, H)  A_{t-1}·W_A
                                 const int* __restrict__ lengths,  // (B,)
                                 T* __restrict__ a_t,             // (B, H)  A_t (out)
                                 int t, int B, int H, int relu) {
    const int n = B * H;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        const int b = i / H;
        a_t[i] = t < lengths[b] ? activate(zx_t[i] + r[i], relu) : T(0);
    }
}
RNNB_EXPORT_KERNEL(rnn_forward_step)

// dZ_t[b, k] = (dL/dA_t + [t = lengths[b]-1]·dL/dA_n + D)[b, k] · g'(A_t[b, k]) for t < lengths[b], else 0
// (d_a is never read there, so NaN in the padding cannot leak).
template <typename T>
__global__ void rnn_backward_step(const T* __restrict__ d_a_t,    // (B, H)  dL/dA_t
                                  const T* __restrict__ d_a_n,    // (B, H)  dL/dA_n
                                  const T* __restrict__ a_t,      // (B, H)  A_t
                                  const T* __restrict__ d_next,   // (B, H)  dZ_{t+1}·W_Aᵀ
                                  const int* __restrict__ lengths,  // (B,)
                                  T* __restrict__ dz_t,           // (B, H)  dL/dZ_t (out)
                                  int t, int B, int H, int relu) {
    const int n = B * H;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        const int b = i / H;
        T g = T(0);
        if (t < lengths[b]) {
            g = d_a_t[i];
            if (t == lengths[b] - 1) g += d_a_n[i];
            g = (g + d_next[i]) * activation_grad(a_t[i], relu);
        }
        dz_t[i] = g;
    }
}
RNNB_EXPORT_KERNEL(rnn_backward_step)
