// Small device helpers shared by the fastdipole CUDA kernels (torch-free).
//
// Everything here is deterministic: reductions use fixed shuffle trees and fixed orders, never float
// atomics, so repeated launches give identical bits.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

#include "common/hipnn_math.h"

namespace fastdipole::cuda::detail {

constexpr int kWarp = 32;
constexpr unsigned kFullMask = 0xffffffffu;

// Grid dimensions: x may be up to 2^31 - 1 blocks, y and z up to 65535.
constexpr int64_t kMaxGridX = 2147483647;
constexpr int64_t kMaxGridY = 65535;

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// Sum over the 32 lanes of a warp with a fixed xor-butterfly; every lane gets the same bits.
template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(kFullMask, v, offset);
  return v;
}

// Squared norm dx^2 + dy^2 + dz^2 rounded exactly as the host computes it, ((dx*dx + dy*dy) + dz*dz) with
// every product and sum rounded separately. nvcc would otherwise contract it into fused multiply-adds, and
// the CPU kernels (-ffp-contract=off) and the PyTorch reference would disagree with the GPU for pairs at the
// cutoff. The _rn intrinsics are never contracted.
__device__ __forceinline__ float squared_norm_rn(float dx, float dy, float dz) {
  return __fadd_rn(__fadd_rn(__fmul_rn(dx, dx), __fmul_rn(dy, dy)), __fmul_rn(dz, dz));
}
__device__ __forceinline__ double squared_norm_rn(double dx, double dy, double dz) {
  return __dadd_rn(__dadd_rn(__dmul_rn(dx, dx), __dmul_rn(dy, dy)), __dmul_rn(dz, dz));
}

// fastdipole::is_pair (hipnn_math.h) without fused multiply-adds: |d|^2 < cutoff^2.
template <typename T>
__device__ __forceinline__ bool is_pair_rn(T dx, T dy, T dz, T cutoff_sq) {
  return squared_norm_rn(dx, dy, dz) < cutoff_sq;
}

// sin(pi x) and cos(pi x). Unlike sin / cos, whose argument reduction has an out-of-line slow path for huge
// arguments (a call that makes the register-heavy envsum kernels spill), these reduce exactly and inline.
__device__ __forceinline__ void sincos_pi(float x, float& s, float& c) { sincospif(x, &s, &c); }
__device__ __forceinline__ void sincos_pi(double x, double& s, double& c) { sincospi(x, &s, &c); }

// cos^2(pi r / (2 r_cut)) and its derivative d/dr, computed from the same angle, so the forward's and the
// backward's cutoff factors are the same bits on the GPU. (cospi rounds once where the CPU's cos(pi r / ...)
// rounds the angle first: the two differ in the last bits, within the tests' tolerances.)
template <typename T>
__device__ __forceinline__ void cutoff_value_and_derivative(T r, T r_cut, T& c, T& dc_dr) {
  T sn, cs;
  sincos_pi(r / (T(2) * r_cut), sn, cs);
  c = cs * cs;
  dc_dr = -T(2) * (pi_value<T>() / (T(2) * r_cut)) * cs * sn;
}

// exp(a) < 9.4e-11 below this exponent, so s = exp(a) * cos^2 <= 1e-10 would be dropped anyway (the CPU
// kernels skip the exp the same way; NaN exponents are kept and propagate).
constexpr double kExpSkip = -23.1;

// Sensitivity of one (pair, v) as the CPU kernels compute it, 0 when the term is dropped (s <= 1e-10,
// r > cutoff). c is cutoff_value(r) (0 is never passed for r > cutoff: the caller tests r first).
template <typename T>
__device__ __forceinline__ T active_sensitivity(T inv_r, T inv_mu, T nhs2, T c) {
  const T a = gaussian_exponent(inv_r, inv_mu, nhs2);
  if (a < T(kExpSkip)) return T(0);
  const T s = exp(a) * c;
  return (s <= T(kSensitivityFloor)) ? T(0) : s;  // NaN is kept, as on the CPU
}

// CSR row [begin, end) of receiving atom i, clamped to [0, n_pairs] so that malformed offsets can never
// index out of bounds (rows then come out empty or overlapping; pairs whose pair_first disagrees with
// the row are skipped by every kernel).
__device__ __forceinline__ void row_range(const int64_t* row_offsets, int64_t i, int64_t n_pairs, int64_t& begin,
                                          int64_t& end) {
  int64_t b = row_offsets[i];
  int64_t e = row_offsets[i + 1];
  b = b < 0 ? 0 : (b > n_pairs ? n_pairs : b);
  e = e < b ? b : (e > n_pairs ? n_pairs : e);
  begin = b;
  end = e;
}

// Molecule m with offsets[m] <= i < offsets[m + 1] (offsets non-decreasing, offsets[0] <= i < offsets[n_mol]);
// for malformed offsets some m in [0, n_mol) comes back and the caller re-checks the bounds.
__device__ __forceinline__ int64_t find_molecule(const int64_t* offsets, int64_t n_mol, int64_t i) {
  int64_t lo = 0, hi = n_mol;  // offsets[lo] <= i < offsets[hi]
  while (hi - lo > 1) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (offsets[mid] <= i) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return lo;
}

}  // namespace fastdipole::cuda::detail
