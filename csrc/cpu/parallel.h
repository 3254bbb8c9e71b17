// Threading and vectorisation hooks of the torch-free CPU kernels.
//
// The kernels never start threads themselves: the caller passes a ParallelFor that splits an index range
// over its own thread pool (register_cpu.cpp passes at::parallel_for, so the kernels share torch's pool;
// a second pool beside torch's was measured to triple step times). serial_for() runs
// everything on the calling thread (tests, tools without torch).
#pragma once

#include <cstdint>
#include <functional>

namespace fastdipole::cpu {

// body(begin, end) must be safe to call concurrently on disjoint sub-ranges of [begin, end).
using RangeBody = std::function<void(int64_t begin, int64_t end)>;
// Calls body on disjoint sub-ranges covering [begin, end); sub-ranges hold at least `grain` items
// where possible. Every kernel produces identical bits whatever the split.
using ParallelFor = std::function<void(int64_t begin, int64_t end, int64_t grain, const RangeBody& body)>;

inline ParallelFor serial_for() {
  return [](int64_t begin, int64_t end, int64_t /*grain*/, const RangeBody& body) {
    if (begin < end) body(begin, end);
  };
}

}  // namespace fastdipole::cpu

// FD_MULTIVERSION: compile a hot function for the x86-64 baseline and for AVX2 / AVX-512 machines, chosen
// once at load time (GCC/Clang function multiversioning through ifunc). The build uses no -march, so the
// wheel runs on any x86-64; elsewhere the macro is empty.
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && !defined(__clang__) && \
    !defined(FASTDIPOLE_NO_MULTIVERSION)
#define FD_MULTIVERSION __attribute__((target_clones("default", "arch=x86-64-v3", "arch=x86-64-v4")))
#else
#define FD_MULTIVERSION
#endif
