// Per-element math of HIP-NN shared by the CPU (.cpp) and CUDA (.cu) kernels.
//
// Torch-free on purpose: every function here is __host__ __device__ so the CPU
// tests exercise exactly the arithmetic the GPU kernels run.
//
// Sensitivity of one pair at distance r (Angstrom) for one Gaussian v:
//   s_v(r) = exp(-0.5 * sigma_v^2 * (1/r - 1/mu_v)^2) * cos^2(pi r / (2 r_cut)),  r < r_cut
// (hippynn's "inverse" sensitivity; mu in Angstrom, sigma in Angstrom).
#pragma once

#include <cmath>

#if defined(__CUDACC__)
#define FD_HD __host__ __device__ __forceinline__
#else
#define FD_HD inline
#endif

namespace fastdipole {

#if !defined(__CUDA_ARCH__)
// Host code: the float overloads of <cmath> (a bare cos(float) would find C's cos(double) and round its
// result), as device code gets them from CUDA's math headers.
using std::cos;
using std::exp;
using std::sin;
#endif

// Terms whose |s| falls below this are dropped, as hippynn's numba envsum does.
constexpr double kSensitivityFloor = 1e-10;

template <typename T>
FD_HD T pi_value() { return T(3.14159265358979323846); }

// cos^2(pi r / (2 r_cut)) and its derivative with respect to r.
template <typename T>
FD_HD void cutoff_and_derivative(T r, T r_cut, T& c, T& dc_dr) {
  const T a = pi_value<T>() / (T(2) * r_cut);
  const T cs = cos(a * r);
  const T sn = sin(a * r);
  c = cs * cs;
  dc_dr = -T(2) * a * cs * sn;
}

template <typename T>
FD_HD T cutoff_value(T r, T r_cut) {
  const T cs = cos(pi_value<T>() * r / (T(2) * r_cut));
  return cs * cs;
}

// Gaussian factor g = exp(-0.5 sigma^2 (1/r - 1/mu)^2) without the cutoff.
template <typename T>
FD_HD T gaussian_value(T inv_r, T mu, T sigma) {
  const T d = inv_r - T(1) / mu;
  return exp(T(-0.5) * sigma * sigma * d * d);
}

// Full sensitivity s = g * c for one (pair, v).
template <typename T>
FD_HD T sensitivity_value(T r, T mu, T sigma, T r_cut) {
  return gaussian_value(T(1) / r, mu, sigma) * cutoff_value(r, r_cut);
}

// Gradient of s = g(r; mu, sigma) * c(r) with respect to r, mu and sigma,
// given g and c (and dc/dr) already computed for this pair.
//   d = 1/r - 1/mu
//   ds/dr     = g * (sigma^2 d / r^2) * c + g * dc/dr
//   ds/dmu    = -g * sigma^2 d / mu^2 * c
//   ds/dsigma = -g * sigma d^2 * c
template <typename T>
FD_HD void sensitivity_gradients(T inv_r, T mu, T sigma, T g, T c, T dc_dr,
                                 T& ds_dr, T& ds_dmu, T& ds_dsigma) {
  const T d = inv_r - T(1) / mu;
  const T s2 = sigma * sigma;
  ds_dr = g * (s2 * d * inv_r * inv_r * c + dc_dr);
  ds_dmu = -g * c * s2 * d / (mu * mu);
  ds_dsigma = -g * c * sigma * d * d;
}

// Hoisted variants for kernels that loop over many pairs: 1/mu_v and -0.5 sigma_v^2 are computed once
// per call. The exponent is rounded in the order of fastdipole.ops.reference.sensitivities,
// (-0.5 sigma^2) * (1/r - 1/mu)^2.
template <typename T>
FD_HD T neg_half_square(T sigma) { return T(-0.5) * (sigma * sigma); }

template <typename T>
FD_HD T gaussian_exponent(T inv_r, T inv_mu, T neg_half_sigma_sq) {
  const T d = inv_r - inv_mu;
  return neg_half_sigma_sq * (d * d);
}

// Same derivatives as sensitivity_gradients, given 1/mu instead of mu.
template <typename T>
FD_HD void sensitivity_gradients_inv_mu(T inv_r, T inv_mu, T sigma, T g, T c, T dc_dr,
                                        T& ds_dr, T& ds_dmu, T& ds_dsigma) {
  const T d = inv_r - inv_mu;
  const T s2 = sigma * sigma;
  const T gc = g * c;
  ds_dr = g * (s2 * d * inv_r * inv_r * c + dc_dr);
  ds_dmu = -gc * s2 * d * (inv_mu * inv_mu);
  ds_dsigma = -gc * sigma * d * d;
}

// Pair test used by every neighbour-list kernel: distinct atoms strictly inside the cutoff.
template <typename T>
FD_HD bool is_pair(T dx, T dy, T dz, T cutoff_sq) {
  return dx * dx + dy * dy + dz * dz < cutoff_sq;
}

}  // namespace fastdipole
