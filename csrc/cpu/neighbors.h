// Neighbour pairs of many molecules at once, torch-free.
//
// All ordered pairs (i, j), i != j, of atoms of the same molecule with |R_j - R_i|^2 < cutoff^2, sorted
// by i then j (the order of fastdipole.ops.reference.neighbor_pairs), as CSR rows per receiving atom.
//
// Two passes with an exact allocation in between, so the output needs no resizing and is deterministic:
//   NeighborListBuilder<T> b(R, n_atoms, offsets, n_molecules, cutoff, pfor);
//   int64_t n_pairs = b.count(row_offsets);      // row_offsets: n_atoms + 1 entries
//   b.fill(pair_first, pair_second);             // n_pairs entries each
// Small molecules (<= kBruteForceMaxAtoms) are brute force, one molecule per task, with the pair test
// stored as a bit matrix in the count pass so the fill pass reads bits instead of recomputing distances.
// Larger molecules use a cell list (cells about cutoff/2 wide, atoms sorted by cell) so time and memory
// are linear in the number of atoms; tasks are runs of cells. Atoms with non-finite coordinates get no
// pairs (the reference's comparisons with NaN are false too).
#pragma once

#include <cstdint>
#include <memory>

#include "cpu/parallel.h"

namespace fastdipole::cpu {

// Molecules up to this many atoms use brute force (a 256 x 256 bit matrix is 8 KiB).
constexpr int64_t kBruteForceMaxAtoms = 256;

template <typename T>
class NeighborListBuilder {
 public:
  // R: (n_atoms, 3) row-major Angstrom; offsets: n_molecules + 1 non-decreasing entries, offsets[0] = 0,
  // offsets[n_molecules] = n_atoms (validated by the caller). cutoff > 0 (Angstrom).
  NeighborListBuilder(const T* R, int64_t n_atoms, const int64_t* offsets, int64_t n_molecules, double cutoff,
                      ParallelFor pfor);
  ~NeighborListBuilder();
  NeighborListBuilder(const NeighborListBuilder&) = delete;
  NeighborListBuilder& operator=(const NeighborListBuilder&) = delete;

  // Writes the CSR row offsets (n_atoms + 1 entries) and returns the number of pairs.
  int64_t count(int64_t* row_offsets);
  // Writes the pairs; call after count() with arrays of count()'s length.
  void fill(int64_t* pair_first, int64_t* pair_second);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

extern template class NeighborListBuilder<float>;
extern template class NeighborListBuilder<double>;

}  // namespace fastdipole::cpu
