// What every envsum kernel (envsum.cu, envsum_lanes.cuh) reads the same way: one pair of a row.
#pragma once

#include <cstdint>

#include "cuda/device_utils.cuh"
#include "cuda/launchers.h"

namespace fastdipole::cuda::detail {

// Pair p of row i as every envsum kernel reads it: j = its sender, or -1 when the pair does not count
// (pair_first[p] != i or the sender is out of range); 1/r, the cutoff factor c and dc/dr, with c = -1 marking
// "no sensitivities" (a pair that does not count, or r > cutoff; a real cutoff factor is >= 0 or NaN).
// p is inside [0, n_pairs) (row_range clamps rows), so r[p] is read along with the indices, not after the
// validity test: one global-memory latency per tile instead of two in a row.
template <typename T>
__device__ __forceinline__ void read_pair(const EnvsumArgs<T>& a, int64_t i, int64_t p, int64_t& j, T& inv_r, T& c,
                                          T& dc) {
  const T cutoff = T(a.cutoff);
  const int64_t jj = a.pair_second[p];
  const int64_t ii = a.pair_first[p];
  const T rp = a.r[p];
  const bool valid = ii == i && jj >= 0 && jj < a.n_atoms;
  j = valid ? jj : -1;
  inv_r = T(0);
  c = T(-1);
  dc = T(0);
  if (valid) {
    if (!(rp > cutoff)) {  // r <= cutoff or NaN, as the CPU kernels
      inv_r = T(1) / rp;
      cutoff_value_and_derivative(rp, cutoff, c, dc);
    }
  }
}

}  // namespace fastdipole::cuda::detail
