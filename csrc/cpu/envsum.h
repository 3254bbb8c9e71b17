// HIP-NN interaction environment sum with in-kernel Gaussian sensitivities, torch-free.
//
//   s_v(r_p)    = exp(-0.5 sigma_v^2 (1/r_p - 1/mu_v)^2) cos^2(pi r_p / (2 cutoff))   for r_p <= cutoff
//   env[i,v,f]  = sum_{p in row i} s_v(r_p) z[second(p), f]
//
// Pairs come as CSR rows by receiving atom (row_offsets; pair_first[p] == i for p in row i), so the forward
// is a segmented reduction: one task owns whole rows, no atomics, the same bits for any thread count.
// The (n_pairs, n_sens) sensitivity matrix is never stored: each pair's sensitivities are computed in
// registers from r, and terms with s <= kSensitivityFloor (1e-10, as hippynn's numba kernels) are skipped
// (also in the backward, so the backward is the exact gradient of the forward that was computed).
//
// Backward, given grad_env = dL/d env:
//   dS[p,v]       = sum_f grad_env[i,v,f] z[j,f]                                  (sensesum)
//   grad_r[p]     = sum_v dS[p,v] ds_v/dr(r_p)
//   grad_mu[v]    = sum_p dS[p,v] ds_v/dmu(r_p),  grad_sigma[v] likewise
//   grad_z[j,f]   = sum_{p: second(p)=j} sum_v grad_env[first(p),v,f] s_v(r_p)     (featsum)
// sensesum runs over rows; featsum over columns (pairs grouped by sending atom, built in the call), so
// neither needs atomics nor symmetric pair lists. grad_mu/grad_sigma are summed in double per fixed block
// of rows, then over blocks in order: identical bits for any thread count.
#pragma once

#include <cstdint>

#include "cpu/parallel.h"

namespace fastdipole::cpu {

template <typename T>
struct EnvsumProblem {
  const T* z = nullptr;                 // (n_atoms, n_features)
  int64_t n_atoms = 0;
  int64_t n_features = 0;
  const T* r = nullptr;                 // (n_pairs,) Angstrom
  const int64_t* pair_first = nullptr;  // (n_pairs,) receiving atom, consistent with row_offsets
  const int64_t* pair_second = nullptr; // (n_pairs,) sending atom
  const int64_t* row_offsets = nullptr; // (n_atoms + 1,)
  int64_t n_pairs = 0;
  const T* mu = nullptr;                // (n_sens,) Angstrom
  const T* sigma = nullptr;             // (n_sens,) Angstrom (multiplies 1/r differences)
  int64_t n_sens = 0;
  double cutoff = 0.0;                  // Angstrom
  int64_t threads = 0;                  // threads pfor may use (0: unknown); a performance hint only
};

// env: (n_atoms, n_sens, n_features), fully written.
template <typename T>
void gaussian_envsum_forward(const EnvsumProblem<T>& problem, T* env, const ParallelFor& pfor);

// grad_env: (n_atoms, n_sens, n_features). Outputs are fully written; any output pointer may be null to
// skip that gradient (grad_z alone skips featsum; grad_r, grad_mu and grad_sigma all null skip sensesum).
template <typename T>
void gaussian_envsum_backward(const EnvsumProblem<T>& problem, const T* grad_env, T* grad_z, T* grad_r, T* grad_mu,
                              T* grad_sigma, const ParallelFor& pfor);

extern template void gaussian_envsum_forward<float>(const EnvsumProblem<float>&, float*, const ParallelFor&);
extern template void gaussian_envsum_forward<double>(const EnvsumProblem<double>&, double*, const ParallelFor&);
extern template void gaussian_envsum_backward<float>(const EnvsumProblem<float>&, const float*, float*, float*,
                                                     float*, float*, const ParallelFor&);
extern template void gaussian_envsum_backward<double>(const EnvsumProblem<double>&, const double*, double*,
                                                      double*, double*, double*, const ParallelFor&);

}  // namespace fastdipole::cpu
