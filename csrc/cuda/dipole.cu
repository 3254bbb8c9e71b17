// Segmented dipole sums on the GPU: mu[m] = sum_{i in m} q_i R_i (e*Angstrom), and its backward.
// Launch-bound at QM9 sizes (a few microseconds); deterministic (fixed shuffle tree, no atomics).
#include <algorithm>

#include "cuda/device_utils.cuh"
#include "cuda/launchers.h"

namespace fastdipole::cuda {
namespace {

using detail::ceil_div;
using detail::kWarp;

constexpr int kWarpsPerBlock = 8;
constexpr int kThreads = 256;

__device__ __forceinline__ void molecule_range(const int64_t* offsets, int64_t m, int64_t n_atoms, int64_t& begin,
                                               int64_t& end) {
  int64_t b = offsets[m], e = offsets[m + 1];
  b = b < 0 ? 0 : (b > n_atoms ? n_atoms : b);
  e = e < b ? b : (e > n_atoms ? n_atoms : e);
  begin = b;
  end = e;
}

// One warp per molecule: lanes stride over its atoms, then a fixed xor-tree sum.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    dipole_forward_kernel(const T* __restrict__ q, const T* __restrict__ R, const int64_t* __restrict__ offsets,
                          int64_t n_atoms, int64_t n_mol, T* __restrict__ out) {
  const int lane = threadIdx.x & (kWarp - 1);
  const int64_t warps = int64_t(gridDim.x) * kWarpsPerBlock;
  for (int64_t m = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp; m < n_mol; m += warps) {
    int64_t begin, end;
    molecule_range(offsets, m, n_atoms, begin, end);
    T sx = T(0), sy = T(0), sz = T(0);
    for (int64_t i = begin + lane; i < end; i += kWarp) {
      const T qi = q[i];
      sx += qi * R[3 * i];
      sy += qi * R[3 * i + 1];
      sz += qi * R[3 * i + 2];
    }
    sx = detail::warp_sum(sx);
    sy = detail::warp_sum(sy);
    sz = detail::warp_sum(sz);
    if (lane == 0) {
      out[3 * m] = sx;
      out[3 * m + 1] = sy;
      out[3 * m + 2] = sz;
    }
  }
}

// One thread per atom; its molecule by binary search over offsets.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    dipole_backward_kernel(const T* __restrict__ grad_mu, const T* __restrict__ q, const T* __restrict__ R,
                           const int64_t* __restrict__ offsets, int64_t n_atoms, int64_t n_mol, T* __restrict__ grad_q,
                           T* __restrict__ grad_R) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n_atoms; i += stride) {
    const int64_t m = detail::find_molecule(offsets, n_mol, i);
    int64_t begin, end;
    molecule_range(offsets, m, n_atoms, begin, end);
    T gq = T(0), gx = T(0), gy = T(0), gz = T(0);
    if (i >= begin && i < end) {
      const T g0 = grad_mu[3 * m], g1 = grad_mu[3 * m + 1], g2 = grad_mu[3 * m + 2];
      const T qi = q[i];
      gq = g0 * R[3 * i] + g1 * R[3 * i + 1] + g2 * R[3 * i + 2];
      gx = g0 * qi;
      gy = g1 * qi;
      gz = g2 * qi;
    }
    grad_q[i] = gq;
    grad_R[3 * i] = gx;
    grad_R[3 * i + 1] = gy;
    grad_R[3 * i + 2] = gz;
  }
}

}  // namespace

template <typename T>
cudaError_t segmented_dipole_forward(const T* q, const T* R, const int64_t* offsets, int64_t n_atoms,
                                     int64_t n_molecules, T* dipoles, cudaStream_t stream) {
  if (n_molecules <= 0) return cudaSuccess;
  const int64_t blocks = std::min<int64_t>(ceil_div(n_molecules, kWarpsPerBlock), detail::kMaxGridX);
  dipole_forward_kernel<T><<<unsigned(blocks), kThreads, 0, stream>>>(q, R, offsets, n_atoms, n_molecules, dipoles);
  return cudaGetLastError();
}

template <typename T>
cudaError_t segmented_dipole_backward(const T* grad_dipoles, const T* q, const T* R, const int64_t* offsets,
                                      int64_t n_atoms, int64_t n_molecules, T* grad_q, T* grad_R,
                                      cudaStream_t stream) {
  if (n_atoms <= 0) return cudaSuccess;
  if (n_molecules <= 0) {  // no molecule: every atom is outside, zero gradient
    cudaError_t err = cudaMemsetAsync(grad_q, 0, sizeof(T) * size_t(n_atoms), stream);
    if (err != cudaSuccess) return err;
    return cudaMemsetAsync(grad_R, 0, sizeof(T) * size_t(3 * n_atoms), stream);
  }
  const int64_t blocks = std::min<int64_t>(ceil_div(n_atoms, kThreads), detail::kMaxGridX);
  dipole_backward_kernel<T><<<unsigned(blocks), kThreads, 0, stream>>>(grad_dipoles, q, R, offsets, n_atoms,
                                                                      n_molecules, grad_q, grad_R);
  return cudaGetLastError();
}

template cudaError_t segmented_dipole_forward<float>(const float*, const float*, const int64_t*, int64_t, int64_t,
                                                     float*, cudaStream_t);
template cudaError_t segmented_dipole_forward<double>(const double*, const double*, const int64_t*, int64_t, int64_t,
                                                      double*, cudaStream_t);
template cudaError_t segmented_dipole_backward<float>(const float*, const float*, const float*, const int64_t*,
                                                      int64_t, int64_t, float*, float*, cudaStream_t);
template cudaError_t segmented_dipole_backward<double>(const double*, const double*, const double*, const int64_t*,
                                                       int64_t, int64_t, double*, double*, cudaStream_t);

}  // namespace fastdipole::cuda
