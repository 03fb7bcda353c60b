// The portability header: the kernels include only this and use only its vocabulary, so that the very
// same source compiles with nvcc/NVRTC (a GPU) and with g++ -std=c++20 (the CPU emulator, emulator.cpp).
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
// ------------------------------------------------------------------------------------ emulator ----
// g++: every CUDA thread is a fiber of emulator.cpp; barriers switch fibers (see emulator.cpp).
#include <math.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#define RNNB_EMULATOR 1
#define RNNB_FULL_MASK 0xffffffffu
#define RNNB_UNROLL
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict

struct dim3 {
    unsigned int x = 1, y = 1, z = 1;
};

namespace rnnb {
namespace emu {

struct ThreadState {  // what a kernel sees of the launch, per fiber
    dim3 thread_idx, block_idx, block_dim, grid_dim;
    unsigned char* shared;  // this block's dynamic shared memory
};

extern ThreadState* current;  // the running fiber's state (the emulator runs one launch at a time)

void syncthreads(int line);
void grid_barrier(int line);
std::uint64_t warp_exchange(unsigned mask, std::uint64_t value, int src_lane, int line);
int lane();

template <typename T>
T shfl_from(unsigned mask, T v, int src_lane, int line) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "shuffle of at most 8 bytes");
    std::uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    bits = warp_exchange(mask, bits, src_lane, line);
    T out;
    std::memcpy(&out, &bits, sizeof(T));
    return out;
}

using Invoker = void (*)(void* fn, void** args);
int register_kernel(const char* name, void* fn, Invoker invoke, const std::size_t* arg_sizes, int nargs);

template <typename... A, std::size_t... I>
void call_with(void (*fn)(A...), void** args, std::index_sequence<I...>) {
    fn(*static_cast<std::remove_cvref_t<A>*>(args[I])...);  // args[i] points at the i-th value
}

template <typename... A>
void invoke(void* fn, void** args) {
    call_with(reinterpret_cast<void (*)(A...)>(fn), args, std::index_sequence_for<A...>{});
}

template <typename... A>
int register_template(const char* name, void (*fn)(A...)) {
    static const std::size_t sizes[] = {sizeof(std::remove_cvref_t<A>)..., 0};
    return register_kernel(name, reinterpret_cast<void*>(fn), &invoke<A...>, sizes, sizeof...(A));
}

}  // namespace emu

inline void grid_sync_at(int line) { emu::grid_barrier(line); }

}  // namespace rnnb

#define threadIdx (::rnnb::emu::current->thread_idx)
#define blockIdx (::rnnb::emu::current->block_idx)
#define blockDim (::rnnb::emu::current->block_dim)
#define gridDim (::rnnb::emu::current->grid_dim)
#define warpSize 32
#define __syncthreads() ::rnnb::emu::syncthreads(__LINE__)
#define grid_sync() grid_sync_at(__LINE__)

namespace rnnb {
namespace emu {
template <typename T>
inline T shfl(int line, unsigned mask, T v, int src, int width = 32) {
    const int lane = ::rnnb::emu::lane();
    return shfl_from(mask, v, (lane & ~(width - 1)) + (src & (width - 1)), line);
}
template <typename T>
inline T shfl_xor(int line, unsigned mask, T v, int lane_mask, int width = 32) {
    const int lane = ::rnnb::emu::lane();
    const int src = lane ^ lane_mask;
    return shfl_from(mask, v, src >= ((lane & ~(width - 1)) + width) ? lane : src, line);
}
template <typename T>
inline T shfl_down(int line, unsigned mask, T v, unsigned delta, int width = 32) {
    const int lane = ::rnnb::emu::lane();
    const int src = lane + static_cast<int>(delta);
    return shfl_from(mask, v, src >= ((lane & ~(width - 1)) + width) ? lane : src, line);
}
}  // namespace emu
}  // namespace rnnb

// The call site's line travels with each exchange, so lanes meeting at different shuffles are caught.
#define __shfl_sync(...) ::rnnb::emu::shfl(__LINE__, __VA_ARGS__)
#define __shfl_xor_sync(...) ::rnnb::emu::shfl_xor(__LINE__, __VA_ARGS__)
#define __shfl_down_sync(...) ::rnnb::emu::shfl_down(__LINE__, __VA_ARGS__)

template <typename T>
inline T min(T a, T b) { return b < a ? b : a; }
template <typename T>
inline T max(T a, T b) { return a < b ? b : a; }

#define RNNB_DYNAMIC_SHARED(T, name) T* name = reinterpret_cast<T*>(::rnnb::emu::current->shared)

// Registers kernel<float> and kernel<double> under their NVRTC name expressions, e.g. "k<float>".
#define RNNB_EXPORT_KERNEL(kernel)                                                                    \
    static const int rnnb_reg_f_##kernel = ::rnnb::emu::register_template(#kernel "<float>", &kernel<float>); \
    static const int rnnb_reg_d_##kernel = ::rnnb::emu::register_template(#kernel "<double>", &kernel<double>);

#endif
