// The CPU emulator's runtime: launches our CUDA kernels (compiled by g++ through cuda_compat.cuh) with
// CUDA's semantics. Each CUDA thread is a fiber (ucontext to start it, _setjmp/_longjmp to switch) on one
// OS thread. A launch runs in phases: a block picked at random under the launch's seed runs each of its
// runnable fibers, in a shuffled order, until it reaches a barrier or exits; then every barrier that all
// its participants have reached releases them. Barriers: __syncthreads (the block), warp shuffles (the warp, full mask only, one
// exchange slot per parity), rnnb::grid_sync (the grid; cooperative launches keep all blocks alive at
// once, others run block by block). A fiber that exits, or waits at another barrier, while others wait
// for it is reported as barrier divergence instead of hanging. Dynamic shared memory is per block and
// starts filled with 0xFF bytes (NaN), so a read before a missing barrier shows up as a wrong answer.
#include "cuda_compat.cuh"

#include <setjmp.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <mutex>
#include <random>
#include <string>
#include <vector>

namespace rnnb {
namespace emu {

ThreadState* current = nullptr;

namespace {

struct Kernel {
    std::string name;
    void* fn;
    Invoker invoke;
    std::vector<std::size_t> arg_sizes;
};

std::vector<Kernel>& registry() {
    static std::vector<Kernel> kernels;
    return kernels;
}

enum Wait { RUNNING, AT_BLOCK, AT_WARP, AT_GRID, EXITED };
constexpr std::size_t kStack = 256 * 1024;  // per fiber, plus one guard page below it

struct Fiber {
    ThreadState state;
    ucontext_t context;
    jmp_buf resume;
    char* stack = nullptr;
    int wait = RUNNING, line = 0, started = 0;
    int block = 0, warp = 0, lane = 0;  // warp: index into Launch::warps
    unsigned parity = 0;                // which exchange slot this lane's next shuffle uses
};

struct Block {
    std::vector<unsigned char> shared;
    int threads = 0, exited = 0, waiting = 0;
};

struct Warp {
    int lanes = 0, exited = 0, waiting = 0;
    std::uint64_t slot[2][32];
};

struct Launch {
    const Kernel* kernel = nullptr;
    void** args = nullptr;
    bool cooperative = false;
    std::vector<Fiber> fibers;  // the fibers alive now (one block, or all blocks when cooperative)
    std::vector<Block> blocks;
    std::vector<Warp> warps;
    int live = 0, at_grid = 0;
    jmp_buf scheduler;
    std::string error;
    Fiber* running = nullptr;
};

Launch* launch = nullptr;
std::mutex one_launch_at_a_time;
std::vector<char*> stack_pool;

char* stack_for(std::size_t i) {
    while (stack_pool.size() <= i) {
        const std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
        void* mem = mmap(nullptr, kStack + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (mem == MAP_FAILED) return nullptr;
        mprotect(mem, page, PROT_NONE);  // a stack overflow faults instead of corrupting a neighbour
        stack_pool.push_back(static_cast<char*>(mem) + page);
    }
    return stack_pool[i];
}

std::string where(const Fiber& f) {
    char buf[160];
    std::snprintf(buf, sizeof buf, "thread (%u,%u,%u) of block (%u,%u,%u)", f.state.thread_idx.x,
                  f.state.thread_idx.y, f.state.thread_idx.z, f.state.block_idx.x, f.state.block_idx.y,
                  f.state.block_idx.z);
    return buf;
}

[[noreturn]] void fail(const char* fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    launch->error = std::string(launch->kernel->name) + ": " + buf;
    _longjmp(launch->scheduler, 1);
}

// Back to the scheduler; returns when the scheduler resumes this fiber.
void yield() {
    Fiber* f = launch->running;
    if (!_setjmp(f->resume)) _longjmp(launch->scheduler, 1);
}

void fiber_main() {
    launch->kernel->invoke(launch->kernel->fn, launch->args);
    Fiber* f = launch->running;
    Block& b = launch->blocks[f->block];
    Warp& w = launch->warps[f->warp];
    if (b.waiting > 0)
        fail("barrier divergence: %s exited while %d threads of its block wait at __syncthreads",
             where(*f).c_str(), b.waiting);
    if (w.waiting > 0)
        fail("barrier divergence: %s exited while %d lanes of its warp wait in a shuffle", where(*f).c_str(),
             w.waiting);
    if (launch->at_grid > 0)
        fail("barrier divergence: %s exited while %d threads wait at grid_sync", where(*f).c_str(),
             launch->at_grid);
    f->wait = EXITED;
    b.exited++;
    w.exited++;
    launch->live--;
    _longjmp(launch->scheduler, 1);
}

void run(Fiber* f) {
    launch->running = f;
    current = &f->state;
    if (!_setjmp(launch->scheduler)) {
        if (!f->started) {
            f->started = 1;
            setcontext(&f->context);
        }
        _longjmp(f->resume, 1);
    }
}

// Releases the barriers of block `bi` (its warps' and its own) and the grid's whose participants have
// all arrived; false if none could be released.
bool release(int bi) {
    Launch& L = *launch;
    Block& b = L.blocks[bi];
    bool any = false;
    const int first = bi * b.threads;
    for (int i = first; i < first + b.threads; ++i) {
        Fiber& f = L.fibers[i];
        const bool warp_done = f.wait == AT_WARP && L.warps[f.warp].waiting == L.warps[f.warp].lanes;
        const bool block_done = f.wait == AT_BLOCK && b.waiting == b.threads;
        if (warp_done && f.line != L.fibers[first + (i - first) / 32 * 32].line && L.error.empty())
            L.error = L.kernel->name + ": barrier divergence: the lanes of a warp reached different shuffles "
                      "(lines " + std::to_string(f.line) + " and " +
                      std::to_string(L.fibers[first + (i - first) / 32 * 32].line) + ") with a full mask";
        if (warp_done || block_done) {
            f.wait = RUNNING;
            any = true;
        }
    }
    for (int i = first; i < first + b.threads; i += 32)
        if (L.warps[L.fibers[i].warp].waiting == L.warps[L.fibers[i].warp].lanes) L.warps[L.fibers[i].warp].waiting = 0;
    if (b.waiting == b.threads) b.waiting = 0;
    if (L.cooperative && L.at_grid > 0 && L.at_grid == L.live) {
        for (Fiber& f : L.fibers)
            if (f.wait == AT_GRID) f.wait = RUNNING;
        L.at_grid = 0;
        any = true;
    }
    return any;
}

std::string deadlock() {
    Launch& L = *launch;
    std::string msg = "barrier divergence (deadlock): no barrier can complete;";
    int shown = 0;
    for (std::size_t bi = 0; bi < L.blocks.size() && shown < 6; ++bi) {
        int counts[5] = {0, 0, 0, 0, 0}, lines[5] = {0, 0, 0, 0, 0};
        const Fiber* first = nullptr;
        for (const Fiber& f : L.fibers)
            if (f.block == static_cast<int>(bi)) {
                counts[f.wait]++;
                lines[f.wait] = f.line;
                if (!first) first = &f;
            }
        if (!first) continue;
        char buf[256];
        std::snprintf(buf, sizeof buf, " block (%u,%u,%u): %d at __syncthreads (line %d), %d in a shuffle (line %d), "
                      "%d at grid_sync (line %d), %d exited;", first->state.block_idx.x, first->state.block_idx.y,
                      first->state.block_idx.z, counts[AT_BLOCK], lines[AT_BLOCK], counts[AT_WARP], lines[AT_WARP],
                      counts[AT_GRID], lines[AT_GRID], counts[EXITED]);
        msg += buf;
        shown++;
    }
    return msg;
}

// Runs the given blocks concurrently (all of a cooperative grid, or one block); false on error.
bool run_blocks(const std::vector<dim3>& block_ids, dim3 grid, dim3 block, std::size_t shared_bytes,
                std::mt19937_64& rng) {
    Launch& L = *launch;
    const int per_block = static_cast<int>(block.x * block.y * block.z);
    const int warps_per_block = (per_block + 31) / 32;
    L.fibers.assign(block_ids.size() * per_block, Fiber());
    L.blocks.assign(block_ids.size(), Block());
    L.warps.assign(block_ids.size() * warps_per_block, Warp());
    L.live = static_cast<int>(L.fibers.size());
    L.at_grid = 0;
    for (std::size_t bi = 0; bi < block_ids.size(); ++bi) {
        Block& b = L.blocks[bi];
        b.shared.assign(shared_bytes + 16, 0xFF);
        b.threads = per_block;
        for (int t = 0; t < per_block; ++t) {
            Fiber& f = L.fibers[bi * per_block + t];
            f.state.thread_idx = {static_cast<unsigned>(t) % block.x, (static_cast<unsigned>(t) / block.x) % block.y,
                                  static_cast<unsigned>(t) / (block.x * block.y)};
            f.state.block_idx = block_ids[bi];
            f.state.block_dim = block;
            f.state.grid_dim = grid;
            f.state.shared = b.shared.data();
            f.block = static_cast<int>(bi);
            f.warp = static_cast<int>(bi) * warps_per_block + t / 32;
            f.lane = t % 32;
            L.warps[f.warp].lanes++;
            f.stack = stack_for(bi * per_block + t);
            if (!f.stack) {
                L.error = "out of memory for fiber stacks";
                return false;
            }
            getcontext(&f.context);
            f.context.uc_stack.ss_sp = f.stack;
            f.context.uc_stack.ss_size = kStack;
            f.context.uc_link = nullptr;
            makecontext(&f.context, fiber_main, 0);
        }
    }
    // A phase: one block, picked at random among those with runnable threads, runs each of them (in a
    // shuffled order) to its next barrier; then its completed barriers release. Blocks thus drift apart
    // by many steps, so a missing grid_sync shows too, and threads of a block interleave at random.
    std::vector<Fiber*> order;
    std::vector<int> ready;
    while (L.live > 0) {
        ready.clear();
        for (std::size_t bi = 0; bi < L.blocks.size(); ++bi) {
            const int first = static_cast<int>(bi) * per_block;
            for (int i = first; i < first + per_block; ++i)
                if (L.fibers[i].wait == RUNNING) {
                    ready.push_back(static_cast<int>(bi));
                    break;
                }
        }
        if (ready.empty()) {
            bool any = false;
            for (std::size_t bi = 0; bi < L.blocks.size(); ++bi) any = release(static_cast<int>(bi)) || any;
            if (!L.error.empty()) return false;
            if (any) continue;
            L.error = L.kernel->name + ": " + deadlock();
            return false;
        }
        const int bi = ready[std::uniform_int_distribution<std::size_t>(0, ready.size() - 1)(rng)];
        order.clear();
        for (int i = bi * per_block; i < (bi + 1) * per_block; ++i)
            if (L.fibers[i].wait == RUNNING) order.push_back(&L.fibers[i]);
        std::shuffle(order.begin(), order.end(), rng);
        for (Fiber* f : order) {
            run(f);
            if (!L.error.empty()) return false;
        }
        release(bi);
        if (!L.error.empty()) return false;
    }
    return true;
}

}  // namespace

int register_kernel(const char* name, void* fn, Invoker invoke, const std::size_t* arg_sizes, int nargs) {
    registry().push_back(Kernel{name, fn, invoke, std::vector<std::size_t>(arg_sizes, arg_sizes + nargs)});
    return static_cast<int>(registry().size());
}

void syncthreads(int line) {
    Fiber* f = launch->running;
    Block& b = launch->blocks[f->block];
    if (b.exited > 0)
        fail("barrier divergence: %s reached __syncthreads (line %d) after %d threads of its block exited",
             where(*f).c_str(), line, b.exited);
    f->wait = AT_BLOCK;
    f->line = line;
    b.waiting++;
    yield();
}

void grid_barrier(int line) {
    Fiber* f = launch->running;
    if (!launch->cooperative)
        fail("grid_sync (line %d) in a launch that is not cooperative", line);
    for (const Block& b : launch->blocks)
        if (b.exited > 0)
            fail("barrier divergence: %s reached grid_sync (line %d) after threads of another block exited",
                 where(*f).c_str(), line);
    f->wait = AT_GRID;
    f->line = line;
    launch->at_grid++;
    yield();
}

int lane() { return launch->running->lane; }

std::uint64_t warp_exchange(unsigned mask, std::uint64_t value, int src_lane, int line) {
    Fiber* f = launch->running;
    Warp& w = launch->warps[f->warp];
    if (mask != 0xffffffffu)
        fail("shuffle with mask 0x%08x at line %d: the emulator supports the full mask only", mask, line);
    if (w.lanes != 32)
        fail("shuffle at line %d in a partial warp (%d lanes): use a block size that is a multiple of 32", line,
             w.lanes);
    if (w.exited > 0)
        fail("barrier divergence: %s shuffles (line %d) after %d lanes of its warp exited", where(*f).c_str(), line,
             w.exited);
    const unsigned p = f->parity;
    w.slot[p][f->lane] = value;
    f->wait = AT_WARP;
    f->line = line;
    w.waiting++;
    yield();
    f->parity ^= 1u;  // the next exchange writes the other slot, so no lane overwrites one still being read
    return w.slot[p][src_lane & 31];
}

}  // namespace emu
}  // namespace rnnb

extern "C" {

int rnnb_emu_kernel_count() { return static_cast<int>(rnnb::emu::registry().size()); }

const char* rnnb_emu_kernel_name(int i) { return rnnb::emu::registry().at(i).name.c_str(); }

// Launches the kernel named by its NVRTC name expression (e.g. "rnn_forward_step<float>"); args[i] points
// at the i-th argument's value and arg_sizes[i] is its size, checked against the kernel's parameters.
// Returns 0, or 1 with a message in err.
int rnnb_emu_launch(const char* name, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                    std::size_t shared_bytes, int cooperative, unsigned long long seed, void** args,
                    const std::size_t* arg_sizes, int nargs, char* err, std::size_t err_len) {
    using namespace rnnb::emu;
    std::lock_guard<std::mutex> guard(one_launch_at_a_time);
    auto report = [&](const std::string& msg) {
        std::snprintf(err, err_len, "%s", msg.c_str());
        return 1;
    };
    const Kernel* kernel = nullptr;
    for (const Kernel& k : registry())
        if (k.name == name) kernel = &k;
    if (!kernel) return report(std::string("no kernel named ") + name + " in the emulator library");
    if (static_cast<int>(kernel->arg_sizes.size()) != nargs)
        return report(std::string(name) + ": " + std::to_string(nargs) + " arguments given, the kernel takes " +
                      std::to_string(kernel->arg_sizes.size()));
    for (int i = 0; i < nargs; ++i)
        if (kernel->arg_sizes[i] != arg_sizes[i])
            return report(std::string(name) + ": argument " + std::to_string(i) + " has " +
                          std::to_string(arg_sizes[i]) + " bytes, the kernel's parameter has " +
                          std::to_string(kernel->arg_sizes[i]));
    const dim3 grid{gx, gy, gz}, block{bx, by, bz};
    const std::size_t threads = std::size_t(bx) * by * bz, blocks = std::size_t(gx) * gy * gz;
    if (threads == 0 || blocks == 0) return report(std::string(name) + ": empty grid or block");
    if (threads > 1024) return report(std::string(name) + ": more than 1024 threads per block");
    if (cooperative && threads * blocks > 8192)
        return report(std::string(name) + ": cooperative grid of more than 8192 threads (emulator limit)");
    Launch L;
    L.kernel = kernel;
    L.args = args;
    L.cooperative = cooperative != 0;
    launch = &L;
    std::mt19937_64 rng(seed);
    std::vector<dim3> ids;
    for (unsigned z = 0; z < gz; ++z)
        for (unsigned y = 0; y < gy; ++y)
            for (unsigned x = 0; x < gx; ++x) ids.push_back({x, y, z});
    bool ok = true;
    if (L.cooperative) {
        ok = run_blocks(ids, grid, block, shared_bytes, rng);
    } else {
        std::shuffle(ids.begin(), ids.end(), rng);  // blocks run in any order
        for (const dim3& id : ids)
            if (!(ok = run_blocks({id}, grid, block, shared_bytes, rng))) break;
    }
    launch = nullptr;
    current = nullptr;
    if (!ok) return report(L.error);
    return 0;
}

}  // extern "C"
