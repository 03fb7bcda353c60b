// What the persistent (cooperative) kernels share: the work item of ROWS batch rows and its warp dot products.
//
// A work item is (one column of the block's slice, up to ROWS batch rows); a warp takes items i = warp,
// warp + nwarps, ...; its 32 lanes split the k-sum, and a xor-butterfly of shuffles adds the lanes in a fixed
// order (deterministic: no atomics). Item i maps to the same warp and lane r to row b0 + r at every step, so a
// value one thread writes at step t is read back by that same thread at the next step without a barrier.
#pragma once
#include "cuda_compat.cuh"

namespace {
constexpr int ROWS = 4;  // batch rows per work item, each an accumulator in registers
}

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
    for (int m = 16; m > 0; m >>= 1) v += __shfl_xor_sync(RNNB_FULL_MASK, v, m);
    return v;  // the same bits in every lane (each level adds the same two values)
}

// Σ_k s[b, k]·w[jj, k] (k < K) for the item's rows b0..b0+ROWS-1, summed over the warp; valid in every lane.
template <typename T>
__device__ __forceinline__ void item_dot(const T* w_s, const T* s, int jj, int b0, int B, int K, int lane,
                                         T (&acc)[ROWS]) {
    RNNB_UNROLL for (int r = 0; r < ROWS; ++r) acc[r] = T(0);
    for (int k = lane; k < K; k += 32) {
        const T w = w_s[jj * K + k];
        RNNB_UNROLL for (int r = 0; r < ROWS; ++r)
            if (b0 + r < B) acc[r] += s[(b0 + r) * K + k] * w;
    }
    RNNB_UNROLL for (int r = 0; r < ROWS; ++r) acc[r] = warp_sum(acc[r]);
}

// The G gates' recurrent products of one item at once: acc[g][r] = Σ_k s[b0 + r, k]·w[g·nj + jj, k] (k < H),
// one pass over the staged state for all gates of column jj.
template <int G, typename T>
__device__ __forceinline__ void item_gate_dots(const T* w_s, const T* s, int jj, int nj, int b0, int B, int H,
                                               int lane, T (&acc)[G][ROWS]) {
    RNNB_UNROLL for (int g = 0; g < G; ++g) RNNB_UNROLL for (int r = 0; r < ROWS; ++r) acc[g][r] = T(0);
    for (int k = lane; k < H; k += 32) {
        T w[G];
        RNNB_UNROLL for (int g = 0; g < G; ++g) w[g] = w_s[(g * nj + jj) * H + k];
        RNNB_UNROLL for (int r = 0; r < ROWS; ++r) {
            if (b0 + r >= B) continue;
            const T x = s[(b0 + r) * H + k];
            RNNB_UNROLL for (int g = 0; g < G; ++g) acc[g][r] += x * w[g];
        }
    }
    RNNB_UNROLL for (int g = 0; g < G; ++g) RNNB_UNROLL for (int r = 0; r < ROWS; ++r) acc[g][r] = warp_sum(acc[g][r]);
}
