// The CPU emulator's half of cuda_compat.cuh: the same kernel vocabulary for g++ -std=c++20, every CUDA
// thread a fiber of emulator.cpp, barriers and warp exchanges switching fibers. Test infrastructure only.
#pragma once
// ------------------------------------------------------------------------------------ emulator ----
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

// A negative line (RNNB_EMULATE_WITHOUT_GRID_SYNC) waits for the block only, as a forgotten grid sync would.
inline void grid_sync_at(int line) { line < 0 ? emu::syncthreads(-line) : emu::grid_barrier(line); }

}  // namespace rnnb

#define threadIdx (::rnnb::emu::current->thread_idx)
#define blockIdx (::rnnb::emu::current->block_idx)
#define blockDim (::rnnb::emu::current->block_dim)
#define gridDim (::rnnb::emu::current->grid_dim)
#define warpSize 32
// Tests build the emulator with one of these defines to show that it notices a missing barrier.
#ifdef RNNB_EMULATE_WITHOUT_SYNCTHREADS
#define __syncthreads() ((void)0)
#else
#define __syncthreads() ::rnnb::emu::syncthreads(__LINE__)
#endif
#ifdef RNNB_EMULATE_WITHOUT_GRID_SYNC
#define grid_sync() grid_sync_at(-__LINE__)
#else
#define grid_sync() grid_sync_at(__LINE__)
#endif

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

