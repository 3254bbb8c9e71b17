// Per-molecule dipole vectors mu[m] = sum_{i in m} q_i R_i (e*Angstrom), torch-free.
// Molecule m owns atoms offsets[m]:offsets[m+1]; one task owns whole molecules and sums its atoms in
// order, so the result has the same bits for any thread count (and equals a serial index_add).
#pragma once

#include <cstdint>

#include "cpu/parallel.h"

namespace fastdipole::cpu {

// q: (n_atoms,) e; R: (n_atoms, 3) Angstrom; mu: (n_molecules, 3), fully written.
template <typename T>
void segmented_dipole_forward(const T* q, const T* R, const int64_t* offsets, int64_t n_molecules, T* mu,
                              const ParallelFor& pfor);

// grad_q[i] = grad_mu[m] . R_i ; grad_R[i] = grad_mu[m] q_i for i in molecule m (either output may be null).
// Atoms outside every molecule (none, once offsets are validated) are not written.
template <typename T>
void segmented_dipole_backward(const T* grad_mu, const T* q, const T* R, const int64_t* offsets, int64_t n_molecules,
                               T* grad_q, T* grad_R, const ParallelFor& pfor);

extern template void segmented_dipole_forward<float>(const float*, const float*, const int64_t*, int64_t, float*,
                                                     const ParallelFor&);
extern template void segmented_dipole_forward<double>(const double*, const double*, const int64_t*, int64_t, double*,
                                                      const ParallelFor&);
extern template void segmented_dipole_backward<float>(const float*, const float*, const float*, const int64_t*,
                                                      int64_t, float*, float*, const ParallelFor&);
extern template void segmented_dipole_backward<double>(const double*, const double*, const double*, const int64_t*,
                                                       int64_t, double*, double*, const ParallelFor&);

}  // namespace fastdipole::cpu
