// The portability header: the kernels include only this and use only its vocabulary, so that the very
// same source compiles with nvcc/NVRTC (a GPU) and with g++ -std=c++20 (the CPU emulator, emulation/).
//
// Vocabulary: threadIdx/blockIdx/blockDim/gridDim, __syncthreads(), __shfl_xor_sync/__shfl_down_sync/
// __shfl_sync with the full mask, rnnb::grid_sync() (cooperative launch only), math functions,
// RNNB_UNROLL before fixed-trip loops, RNNB_DYNAMIC_SHARED(T, name) for the block's dynamic shared memory, RNNB_EXPORT_KERNEL(k) after each
// kernel template (float and double instantiations). No atomics, no static __shared__ arrays.
#pragma once

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
// ------------------------------------------------------------------------------------------ GPU ----
#if defined(__has_include) && !defined(RNNB_NO_COOPERATIVE_GROUPS)
#if __has_include(<cooperative_groups.h>)
#include <cooperative_groups.h>
#define RNNB_HAVE_COOPERATIVE_GROUPS 1
#endif
#endif

#define RNNB_FULL_MASK 0xffffffffu
#define RNNB_UNROLL _Pragma("unroll")

namespace rnnb {

#ifndef RNNB_HAVE_COOPERATIVE_GROUPS
// Fallback grid barrier for toolchains without <cooperative_groups.h>: a generation counter. Valid only
// under a cooperative launch (all blocks resident); [0] counts arrivals, [1] is the generation.
__device__ unsigned int grid_barrier_state[2];
#endif

// Every thread of every block waits here; writes before it are visible to all threads after it.
__device__ __forceinline__ void grid_sync() {
#ifdef RNNB_HAVE_COOPERATIVE_GROUPS
    cooperative_groups::this_grid().sync();
#else
    __syncthreads();
    if (threadIdx.x == 0 && threadIdx.y == 0 && threadIdx.z == 0) {
        volatile unsigned int* generation = &grid_barrier_state[1];
        const unsigned int mine = *generation;
        const unsigned int blocks = gridDim.x * gridDim.y * gridDim.z;
        __threadfence();
        if (atomicAdd(&grid_barrier_state[0], 1u) == blocks - 1) {
            atomicExch(&grid_barrier_state[0], 0u);
            __threadfence();
            atomicAdd(&grid_barrier_state[1], 1u);
        } else {
            while (*generation == mine) {
            }
        }
        __threadfence();
    }
    __syncthreads();
#endif
}

}  // namespace rnnb

// One dynamic shared memory buffer per block (size given at launch), seen as T*.
#define RNNB_DYNAMIC_SHARED(T, name)                                   \
    extern __shared__ __align__(16) unsigned char rnnb_dynamic_smem_[]; \
    T* name = reinterpret_cast<T*>(rnnb_dynamic_smem_)

#if defined(__CUDACC_RTC__)
// NVRTC: CuPy's name_expressions instantiate kernel<float> and kernel<double>.
#define RNNB_EXPORT_KERNEL(kernel)
#else
// nvcc (offline -cubin check): taking the addresses instantiates both device kernels.
#define RNNB_EXPORT_KERNEL(kernel)                                                     \
    __attribute__((unused)) static void* const rnnb_keep_##kernel[] = {reinterpret_cast<void*>(&kernel<float>), \
                                               reinterpret_cast<void*>(&kernel<double>)};
#endif

#else
// g++: the CPU emulator's half of this header (test infrastructure, not shipped to a GPU).
#include "emulation/cuda_emulated.cuh"
#endif
