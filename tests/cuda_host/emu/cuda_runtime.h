// A tiny CUDA emulator for running fastdipole's kernels on the CPU (tests/cuda_host/, no GPU needed).
//
// The real csrc/cuda sources are rewritten by tests/cuda_host/emulate.py (`k<<<grid, block, smem, s>>>(a)`
// becomes `emu::launch([&] { k(a); }, grid, block, smem, s)`, `extern __shared__` becomes a per-block
// buffer) and compiled with the host compiler against this header instead of the CUDA runtime.
//
// Execution model: one OS thread; each CUDA thread of a block is a ucontext fiber; blocks run one after
// another, their threads resumed in ascending, then descending order. __syncthreads / __syncwarp and the
// warp collectives (__shfl_*_sync, __ballot_sync) are barriers on which fibers yield until every live
// thread of the block / warp has arrived, so any SIMT program that is correct without lock-step
// assumptions runs as on a GPU. It is not a race detector (compute-sanitizer racecheck is, on a GPU). A barrier that can never complete (divergent
// __syncthreads) aborts with a message. Dynamic shared memory is filled with garbage (0xA5) for each block,
// so code that reads shared memory before writing it shows up; built with -fsanitize=address, every
// global- and shared-memory access is bounds-checked (the harness allocates exact-size buffers).
// "Device memory" is host memory: cudaMemcpy*/cudaMemset* are memcpy/memset.
#pragma once

#include <setjmp.h>
#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __restrict__ __restrict
#define __shared__ static
#define __align__(n) alignas(n)

typedef int cudaError_t;
enum : int { cudaSuccess = 0, cudaErrorInvalidValue = 1 };
typedef struct CUstream_st* cudaStream_t;
enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4
};

struct alignas(16) float4 {
  float x, y, z, w;
};

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};

// Device math with the float overloads CUDA has (cosf for cos(float), ...).
using std::cos;
using std::exp;
using std::fmax;
using std::fmin;
using std::isfinite;
using std::sin;
template <typename T>
inline T min(T a, T b) { return b < a ? b : a; }
template <typename T>
inline T max(T a, T b) { return a < b ? b : a; }
inline void sincospif(float x, float* s, float* c) {  // reference: sin / cos of pi x in double, rounded
  const double a = 3.14159265358979323846 * double(x);
  *s = float(std::sin(a));
  *c = float(std::cos(a));
}
inline void sincospi(double x, double* s, double* c) {
  const long double a = 3.14159265358979323846264338327950288L * (long double)x;
  *s = double(std::sin(a));
  *c = double(std::cos(a));
}
inline int __popc(unsigned v) { return __builtin_popcount(v); }
inline float __fadd_rn(float a, float b) { return a + b; }  // built with -ffp-contract=off: never fused
inline float __fmul_rn(float a, float b) { return a * b; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
inline unsigned atomicAdd(unsigned* p, unsigned v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
// Float atomics: fibers share one OS thread and never switch inside a call, so a plain add is atomic.
inline float atomicAdd(float* p, float v) { const float old = *p; *p = old + v; return old; }
inline double atomicAdd(double* p, double v) { const double old = *p; *p = old + v; return old; }

namespace emu {

constexpr int kWarp = 32;
constexpr size_t kStackBytes = 256 * 1024;

// Fibers are made once (makecontext) and reused for every block of every launch; they switch with
// _setjmp/_longjmp (no signal-mask system call per switch, unlike swapcontext).
struct Fiber {
  ucontext_t ctx;
  jmp_buf jb;
  std::unique_ptr<char[]> stack;
  bool started = false;
  bool done = false;
};

struct Barrier {
  int arrived = 0;
  unsigned generation = 0;
};

struct State {
  dim3 grid, block, block_idx;
  unsigned n_threads = 0;
  std::vector<Fiber> fibers;
  std::vector<unsigned> warp_alive;
  unsigned block_alive = 0;
  Barrier block_barrier;
  std::vector<Barrier> warp_barriers;
  std::vector<unsigned long long> exchange;  // kWarp slots per warp
  std::vector<unsigned char> dynamic_shared;
  std::function<void()> body;
  jmp_buf scheduler;
  unsigned current = 0;
  bool progress = false;
  long long launches = 0;
};

inline State& state() {
  static State s = [] {
    State st;
    st.fibers.reserve(1024);  // fibers never move (their contexts point into themselves)
    return st;
  }();
  return s;
}

inline unsigned tid() { return state().current; }

[[noreturn]] inline void fatal(const char* what) {
  std::fprintf(stderr, "emu: %s (block %u,%u thread %u)\n", what, state().block_idx.x, state().block_idx.y, tid());
  std::abort();
}

inline void yield() {
  State& s = state();
  if (_setjmp(s.fibers[s.current].jb) == 0) _longjmp(s.scheduler, 1);
}

// Waits until `alive` threads have arrived at `b` (the last arriver releases the others).
inline void barrier_wait(Barrier& b, const unsigned& alive) {
  const unsigned gen = b.generation;
  if (unsigned(++b.arrived) >= alive) {
    b.arrived = 0;
    ++b.generation;
    state().progress = true;
    return;
  }
  while (b.generation == gen) yield();
  state().progress = true;
}

inline void syncthreads() { barrier_wait(state().block_barrier, state().block_alive); }
inline void syncwarp() {
  State& s = state();
  const unsigned w = tid() / kWarp;
  barrier_wait(s.warp_barriers[w], s.warp_alive[w]);
}

template <typename T>
inline T exchange(T v, int src_lane) {
  static_assert(sizeof(T) <= sizeof(unsigned long long), "exchange of a wide type");
  State& s = state();
  const unsigned w = tid() / kWarp, lane = tid() % kWarp;
  if (s.warp_alive[w] != unsigned(kWarp)) fatal("warp collective with exited lanes");
  std::memcpy(&s.exchange[w * kWarp + lane], &v, sizeof(T));
  syncwarp();
  T out;
  std::memcpy(&out, &s.exchange[w * kWarp + unsigned(src_lane)], sizeof(T));
  syncwarp();
  return out;
}

inline void fiber_entry() {
  for (;;) {  // one iteration per block this fiber takes part in
    State& s = state();
    s.body();
    Fiber& f = s.fibers[s.current];
    f.done = true;
    --s.block_alive;
    --s.warp_alive[s.current / kWarp];
    s.progress = true;
    // A thread that exits completes barriers the remaining ones are waiting at.
    if (s.block_barrier.arrived > 0 && unsigned(s.block_barrier.arrived) >= s.block_alive) {
      s.block_barrier.arrived = 0;
      ++s.block_barrier.generation;
    }
    Barrier& wb = s.warp_barriers[s.current / kWarp];
    if (wb.arrived > 0 && unsigned(wb.arrived) >= s.warp_alive[s.current / kWarp]) {
      wb.arrived = 0;
      ++wb.generation;
    }
    if (_setjmp(f.jb) == 0) _longjmp(s.scheduler, 2);  // resumed here for the next block
  }
}

// Runs fiber f until it yields or finishes.
inline void resume(Fiber& f) {
  State& s = state();
  if (_setjmp(s.scheduler) != 0) return;  // back from the fiber
  if (!f.started) {
    f.started = true;
    ucontext_t here;
    swapcontext(&here, &f.ctx);  // the fiber comes back with _longjmp, never through `here`
    fatal("fiber returned through its start context");
  }
  _longjmp(f.jb, 1);
}

inline unsigned char* dynamic_shared() {
  State& s = state();
  return s.dynamic_shared.empty() ? nullptr : s.dynamic_shared.data();
}

inline void run_block() {
  State& s = state();
  const unsigned n = s.n_threads;
  s.block_alive = n;
  s.block_barrier = Barrier{};
  const unsigned n_warps = (n + kWarp - 1) / kWarp;
  s.warp_alive.assign(n_warps, 0);
  for (unsigned t = 0; t < n; ++t) ++s.warp_alive[t / kWarp];
  s.warp_barriers.assign(n_warps, Barrier{});
  s.exchange.assign(size_t(n_warps) * kWarp, 0);
  std::fill(s.dynamic_shared.begin(), s.dynamic_shared.end(), (unsigned char)0xA5);
  for (unsigned t = 0; t < n; ++t) {
    Fiber& f = s.fibers[t];
    f.done = false;
    if (!f.stack) {
      f.stack.reset(new char[kStackBytes]);
      getcontext(&f.ctx);
      f.ctx.uc_stack.ss_sp = f.stack.get();
      f.ctx.uc_stack.ss_size = kStackBytes;
      f.ctx.uc_link = nullptr;
      makecontext(&f.ctx, fiber_entry, 0);
    }
  }
  unsigned live = n;
  // Scheduling passes alternate between ascending and descending thread order, so that code missing a
  // barrier sees both "later threads have not run yet" and "later threads already ran".
  for (unsigned pass = 0; live > 0; ++pass) {
    s.progress = false;
    for (unsigned k = 0; k < n; ++k) {
      const unsigned t = (pass + s.block_idx.x) % 2 == 0 ? k : n - 1 - k;
      if (s.fibers[t].done) continue;
      s.current = t;
      resume(s.fibers[t]);
    }
    live = 0;
    for (unsigned t = 0; t < n; ++t) live += s.fibers[t].done ? 0 : 1;
    if (live > 0 && !s.progress) fatal("deadlock: a barrier can never complete (divergent __syncthreads?)");
  }
}

inline void launch(std::function<void()> body, dim3 grid, dim3 block, size_t shared_bytes = 0,
                   cudaStream_t = nullptr) {
  State& s = state();
  if (block.y != 1 || block.z != 1 || grid.z != 1) fatal("only 1-D blocks and 2-D grids are emulated");
  if (block.x == 0 || block.x > 1024 || grid.x == 0 || grid.y == 0) fatal("invalid launch configuration");
  if (shared_bytes > 48 * 1024) fatal("more than 48 KiB of dynamic shared memory without an opt-in");
  ++s.launches;
  s.grid = grid;
  s.block = block;
  s.n_threads = block.x;
  s.body = std::move(body);
  if (s.fibers.size() < block.x) {
    if (!s.fibers.empty() && s.fibers.capacity() < block.x) {
      // Fibers hold pointers into their own jmp_buf/ctx: never move them once made.
      std::fprintf(stderr, "emu: grow the fiber pool before the first launch\n");
      std::abort();
    }
    s.fibers.resize(block.x);
  }
  s.dynamic_shared.assign(shared_bytes, 0);
  for (unsigned by = 0; by < grid.y; ++by) {
    for (unsigned bx = 0; bx < grid.x; ++bx) {
      s.block_idx = dim3(bx, by, 0);
      run_block();
    }
  }
}

struct Index3 {
  unsigned x, y, z;
};

}  // namespace emu

#define threadIdx (emu::Index3{emu::tid(), 0u, 0u})
#define blockIdx (emu::Index3{emu::state().block_idx.x, emu::state().block_idx.y, 0u})
#define blockDim (emu::Index3{emu::state().block.x, 1u, 1u})
#define gridDim (emu::Index3{emu::state().grid.x, emu::state().grid.y, 1u})

inline void __syncthreads() { emu::syncthreads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  if (mask != 0xffffffffu) emu::fatal("__syncwarp with a partial mask");
  emu::syncwarp();
}
template <typename T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask) {
  if (mask != 0xffffffffu) emu::fatal("__shfl_xor_sync with a partial mask");
  return emu::exchange(v, int(emu::tid() % emu::kWarp) ^ lane_mask);
}
template <typename T>
inline T __shfl_sync(unsigned mask, T v, int src_lane) {
  if (mask != 0xffffffffu) emu::fatal("__shfl_sync with a partial mask");
  return emu::exchange(v, src_lane & (emu::kWarp - 1));
}
template <typename T>
inline T __shfl_up_sync(unsigned mask, T v, unsigned delta) {
  if (mask != 0xffffffffu) emu::fatal("__shfl_up_sync with a partial mask");
  const int lane = int(emu::tid() % emu::kWarp);
  const T other = emu::exchange(v, lane >= int(delta) ? lane - int(delta) : lane);
  return other;
}
inline unsigned __ballot_sync(unsigned mask, bool predicate) {
  if (mask != 0xffffffffu) emu::fatal("__ballot_sync with a partial mask");
  emu::State& s = emu::state();
  const unsigned w = emu::tid() / emu::kWarp, lane = emu::tid() % emu::kWarp;
  const unsigned long long mine = predicate ? 1ull : 0ull;
  std::memcpy(&s.exchange[w * emu::kWarp + lane], &mine, sizeof mine);
  emu::syncwarp();
  unsigned bits = 0;
  for (unsigned l = 0; l < unsigned(emu::kWarp); ++l) bits |= (s.exchange[w * emu::kWarp + l] ? 1u : 0u) << l;
  emu::syncwarp();
  return bits;
}

inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline cudaError_t cudaPeekAtLastError() { return cudaSuccess; }
inline cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t = nullptr) {
  if (bytes) std::memset(p, value, bytes);
  return cudaSuccess;
}
inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind, cudaStream_t = nullptr) {
  if (bytes) std::memcpy(dst, src, bytes);
  return cudaSuccess;
}
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
inline const char* cudaGetErrorString(cudaError_t e) { return e == cudaSuccess ? "no error" : "invalid value"; }
