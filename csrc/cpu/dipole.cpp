// Segmented dipole reduction on the CPU (see dipole.h).
#include "cpu/dipole.h"

namespace fastdipole::cpu {

namespace {
// Molecules per task: QM9 molecules have ~18 atoms, so a task is a few thousand atoms.
constexpr int64_t kMoleculeGrain = 256;
}  // namespace

template <typename T>
void segmented_dipole_forward(const T* q, const T* R, const int64_t* offsets, int64_t n_molecules, T* mu,
                              const ParallelFor& pfor) {
  pfor(0, n_molecules, kMoleculeGrain, [&](int64_t m0, int64_t m1) {
    for (int64_t m = m0; m < m1; ++m) {
      T x = T(0), y = T(0), z = T(0);
      for (int64_t i = offsets[m]; i < offsets[m + 1]; ++i) {
        x += q[i] * R[3 * i];
        y += q[i] * R[3 * i + 1];
        z += q[i] * R[3 * i + 2];
      }
      mu[3 * m] = x;
      mu[3 * m + 1] = y;
      mu[3 * m + 2] = z;
    }
  });
}

template <typename T>
void segmented_dipole_backward(const T* grad_mu, const T* q, const T* R, const int64_t* offsets, int64_t n_molecules,
                               T* grad_q, T* grad_R, const ParallelFor& pfor) {
  pfor(0, n_molecules, kMoleculeGrain, [&](int64_t m0, int64_t m1) {
    for (int64_t m = m0; m < m1; ++m) {
      const T gx = grad_mu[3 * m], gy = grad_mu[3 * m + 1], gz = grad_mu[3 * m + 2];
      for (int64_t i = offsets[m]; i < offsets[m + 1]; ++i) {
        if (grad_q) grad_q[i] = gx * R[3 * i] + gy * R[3 * i + 1] + gz * R[3 * i + 2];
        if (grad_R) {
          grad_R[3 * i] = gx * q[i];
          grad_R[3 * i + 1] = gy * q[i];
          grad_R[3 * i + 2] = gz * q[i];
        }
      }
    }
  });
}

template void segmented_dipole_forward<float>(const float*, const float*, const int64_t*, int64_t, float*,
                                              const ParallelFor&);
template void segmented_dipole_forward<double>(const double*, const double*, const int64_t*, int64_t, double*,
                                               const ParallelFor&);
template void segmented_dipole_backward<float>(const float*, const float*, const float*, const int64_t*, int64_t,
                                               float*, float*, const ParallelFor&);
template void segmented_dipole_backward<double>(const double*, const double*, const double*, const int64_t*, int64_t,
                                                double*, double*, const ParallelFor&);

}  // namespace fastdipole::cpu
