// Kernels that exist only to prove the emulator (tests/test_cupy_emulator.py): a block-wide reversal
// through shared memory (needs its __syncthreads), a warp sum, and deliberately divergent barriers.
#include "cuda_compat.cuh"

// out[i] = in[n - 1 - i] within one block of n threads, through shared memory.
template <typename T>
__global__ void selftest_reverse(const T* __restrict__ in, T* __restrict__ out, int drop_barrier) {
    RNNB_DYNAMIC_SHARED(T, s);
    const int i = threadIdx.x, n = blockDim.x;
    s[i] = in[blockIdx.x * n + i];
    if (!drop_barrier) __syncthreads();
    out[blockIdx.x * n + i] = s[n - 1 - i];
}
RNNB_EXPORT_KERNEL(selftest_reverse)

// Threads with threadIdx.x < split return before the barrier: undefined on a GPU, an error in the emulator.
template <typename T>
__global__ void selftest_divergent(T* __restrict__ out, int split) {
    if (static_cast<int>(threadIdx.x) < split) return;
    __syncthreads();
    out[threadIdx.x] = T(1);
}
RNNB_EXPORT_KERNEL(selftest_divergent)

// out[w] = Σ of in over warp w, by xor shuffles (checks the emulated warp exchange).
template <typename T>
__global__ void selftest_warp_sum(const T* __restrict__ in, T* __restrict__ out) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    T v = in[i];
    for (int m = 16; m > 0; m >>= 1) v += __shfl_xor_sync(RNNB_FULL_MASK, v, m);
    if ((threadIdx.x & 31) == 0) out[i / 32] = v;
}
RNNB_EXPORT_KERNEL(selftest_warp_sum)

// Odd and even lanes shuffle at different lines: undefined on a GPU, an error in the emulator.
template <typename T>
__global__ void selftest_divergent_shuffle(T* __restrict__ out) {
    T v = T(threadIdx.x);
    if (threadIdx.x & 1)
        v = __shfl_xor_sync(RNNB_FULL_MASK, v, 1);
    else
        v = __shfl_xor_sync(RNNB_FULL_MASK, v, 1) + T(1);
    out[threadIdx.x] = v;
}
RNNB_EXPORT_KERNEL(selftest_divergent_shuffle)
