// Torch-free host API of the fastdipole CUDA kernels (implemented in csrc/cuda/*.cu).
//
// Only plain pointers, sizes and a cudaStream_t cross this boundary, so the kernels compile in seconds with
// nvcc and without torch headers; csrc/register_cuda.cpp is the one torch-facing file. Which kernel runs
// comes from csrc/cuda/kernel_plan.h: the caller makes the plan and passes it.
// Every function returns the first CUDA error it met (cudaSuccess otherwise) and launches nothing for
// empty inputs. All device pointers live on the current device; all work is queued on `stream`.
//
// Units: positions, distances, mu and cutoff in Angstrom; sigma multiplies 1/r differences (Angstrom);
// charges in e; dipoles in e*Angstrom.
//
// Index contract (as the CPU kernels): pairs come as CSR rows by receiving atom, row_offsets has
// n_atoms + 1 non-decreasing entries from 0 to n_pairs, and pair_first[p] == i for p in row i. The CUDA
// kernels do not validate index values (that would need a device-to-host sync every call); instead every
// read is bounds-checked: a row is clamped to [0, n_pairs], a pair whose pair_first disagrees with its row
// or whose pair_second is outside [0, n_atoms) contributes nothing, and molecule offsets are clamped to
// [0, n_atoms]. Malformed input therefore gives wrong numbers, never an out-of-bounds access.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

#include "cuda/cell_grid.h"
#include "cuda/kernel_plan.h"

namespace fastdipole::cuda {

// Device scratch memory for launchers that need temporaries, provided by the caller (register_cuda.cpp
// hands out tensors from torch's caching allocator). A block stays valid until the allocator is destroyed
// and is only used on the launch stream.
class ScratchAllocator {
 public:
  virtual void* allocate(std::size_t bytes) = 0;

 protected:
  ~ScratchAllocator() = default;
};

// ---------------------------------------------------------------------------------------------------------
// Neighbour pairs: all ordered pairs (i, j), i != j, of the same molecule with |R_j - R_i|^2 < cutoff^2,
// sorted by i then j, as CSR rows per receiving atom. Two passes with an exact allocation in between:
//   NeighborPairsLauncher<T> nl(R, n_atoms, offsets_dev, offsets_host, n_mol, cutoff, min_atoms, scratch, s);
//   int64_t n_pairs; err = nl.count(row_offsets, &n_pairs);   // row_offsets: n_atoms + 1, device
//   err = nl.fill(pair_first, pair_second);                    // n_pairs each, device
// Molecules with fewer than `cell_list_min_atoms` atoms (kDefaultCellListMinAtoms unless the caller says
// otherwise) are brute force, one warp per receiving atom
// (ballot + popcount give each pair's slot in ascending j directly). Larger ones use a cell list: atoms
// binned into cells >= cutoff wide, one warp per receiving atom over the 27 neighbouring cells, each row
// then sorted by rank (its j are distinct). count() synchronises the stream twice at most: once to read
// the bounding boxes of the large molecules (only if there are any), once to read the number of pairs.
// offsets must have been validated by the caller (non-decreasing, offsets[0] = 0, offsets[n_mol] = n_atoms).
// ---------------------------------------------------------------------------------------------------------
template <typename T>
class NeighborPairsLauncher {
 public:
  NeighborPairsLauncher(const T* R, int64_t n_atoms, const int64_t* offsets_device, const int64_t* offsets_host,
                        int64_t n_molecules, double cutoff, int64_t cell_list_min_atoms, ScratchAllocator& scratch,
                        cudaStream_t stream);

  // Writes row_offsets (n_atoms + 1 entries, device) and the number of pairs (host).
  cudaError_t count(int64_t* row_offsets, int64_t* n_pairs);
  // Writes the pairs; call after count() with arrays of count()'s length.
  cudaError_t fill(int64_t* pair_first, int64_t* pair_second);

  // Large molecules found by count() (for tests and benchmarks).
  int64_t n_cell_list_molecules() const { return n_large_; }

 private:
  const T* R_;
  int64_t n_atoms_;
  const int64_t* offsets_;
  const int64_t* offsets_host_;
  int64_t n_mol_;
  double cutoff_;
  T cutoff_sq_;
  int64_t min_atoms_;
  ScratchAllocator& scratch_;
  cudaStream_t stream_;

  // Set by count().
  int64_t* row_offsets_ = nullptr;
  int64_t n_large_ = 0;
  int64_t max_large_atoms_ = 0;
  CellGrid* grids_ = nullptr;         // device, n_large_ entries
  int64_t* cell_offsets_ = nullptr;   // device, n_cells + 1: atoms of cell c are cell_atoms[off[c]:off[c+1]]
  int32_t* cell_atoms_ = nullptr;     // device, atom ids sorted by cell
  int64_t* atom_cell_ = nullptr;      // device, n_atoms: global cell of each large-molecule atom, -1 if none
};

extern template class NeighborPairsLauncher<float>;
extern template class NeighborPairsLauncher<double>;

// ---------------------------------------------------------------------------------------------------------
// Gaussian envsum: env[i, v, f] = sum_{p in row i} s_v(r_p) z[pair_second(p), f] with
//   s_v(r) = exp(-0.5 sigma_v^2 (1/r - 1/mu_v)^2) cos^2(pi r / (2 cutoff)) for r <= cutoff,
// terms with s <= 1e-10 dropped (forward and backward, as the CPU kernels).
// ---------------------------------------------------------------------------------------------------------
template <typename T>
struct EnvsumArgs {
  const T* z = nullptr;                  // (n_atoms, n_features)
  const T* r = nullptr;                  // (n_pairs,) Angstrom
  const int64_t* pair_first = nullptr;   // (n_pairs,)
  const int64_t* pair_second = nullptr;  // (n_pairs,)
  const int64_t* row_offsets = nullptr;  // (n_atoms + 1,)
  const T* mu = nullptr;                 // (n_sens,) Angstrom
  const T* sigma = nullptr;              // (n_sens,)
  int64_t n_atoms = 0;
  int64_t n_features = 0;
  int64_t n_pairs = 0;
  int64_t n_sens = 0;
  double cutoff = 0.0;                   // Angstrom
};

// The problem as plan_envsum (kernel_plan.h) sees it: every envsum launcher runs the plan made for it.
template <typename T>
EnvsumShape envsum_shape(const EnvsumArgs<T>& args) {
  return EnvsumShape{int(sizeof(T)), args.n_sens, args.n_features};
}

// env: (n_atoms, n_sens, n_features), fully written; each neighbour feature row is read once per pair.
// plan.forward (plan_envsum(envsum_shape(args), ...)): lanes (envsum_lanes.cuh, the default for n_sens <= 32
// and n_features >= 16): one warp per (receiving atom, chunk of 32 x plan.forward_columns features), every
// lane's accumulators for all sensitivities in registers, the sensitivities of a tile of 32 pairs staged in
// shared memory by the warp; or block: one block per receiving atom, one thread per (feature, group of
// plan.block_group sensitivities). cudaErrorInvalidValue for a plan with an error or one made for another
// problem.
template <typename T>
cudaError_t gaussian_envsum_forward(const EnvsumArgs<T>& args, const EnvsumPlan& plan, T* env, cudaStream_t stream);

// Pairs grouped by sending atom, the grouping gaussian_envsum_backward takes: order (n_pairs,) lists the pair
// indices by ascending pair_second, ascending index inside a group (a stable sort); offsets (n_atoms + 1,)
// delimits the groups (pairs whose sender is outside [0, n_atoms) come after offsets[n_atoms]). A CUB radix
// sort of 32-bit keys over only the bits n_atoms needs. Needs n_pairs < 2^31 (cudaErrorInvalidValue
// otherwise) and device scratch of group_pairs_by_sender_scratch_bytes(n_pairs, n_atoms) bytes.
size_t group_pairs_by_sender_scratch_bytes(int64_t n_pairs, int64_t n_atoms);
cudaError_t group_pairs_by_sender(const int64_t* pair_second, int64_t n_pairs, int64_t n_atoms, void* scratch,
                                  int64_t* order, int64_t* offsets, cudaStream_t stream);

// Device scratch gaussian_envsum_backward needs (bytes).
template <typename T>
size_t gaussian_envsum_backward_scratch_bytes(const EnvsumArgs<T>& args);

// Backward. second_order (n_pairs,) lists pair indices grouped by pair_second in ascending j, pairs in
// ascending index within a group (a stable sort of pair_second); second_offsets (n_atoms + 1,) delimits the
// groups (group_pairs_by_sender makes them). Outputs are fully written: grad_z (n_atoms, n_features),
// grad_r (n_pairs,), grad_mu and grad_sigma (n_sens,). Pass 1, one block per receiving atom i, fuses the two
// consumers of grad_env: for each pair it forms the featsum terms C[p,f] = sum_v grad_env[i,v,f] s_v(p) (to
// scratch) and the sensesum dS[p,v] = sum_f grad_env[i,v,f] z[j,f] (fixed-tree reductions), which give
// grad_r and the atom's grad_mu/grad_sigma partials (double). Atom i's grad_env rows come from DRAM once.
// Pass 1 is plan.backward: the lanes kernel (one warp per chunk of 32 or 64 features holding grad_env in
// registers, transposing warp sums; the default for float32 with n_sens <= 32 and n_features >= 16) or the
// tiled kernel (shared-memory tiles). Pass 2 sums C over each
// sending atom's group in order (grad_z, one warp per sender and feature chunk); pass 3 sums the partials
// over atoms in a fixed tree. No float atomics: the result is bitwise reproducible.
// Any output may be null to skip it: no grad_z skips the C terms and pass 2 (second_order and
// second_offsets are then not read and may be null), no grad_r skips its sums, neither grad_mu nor
// grad_sigma skips pass 3.
template <typename T>
cudaError_t gaussian_envsum_backward(const EnvsumArgs<T>& args, const EnvsumPlan& plan, const T* grad_env,
                                     const int64_t* second_order, const int64_t* second_offsets, void* scratch,
                                     T* grad_z, T* grad_r, T* grad_mu, T* grad_sigma, cudaStream_t stream);

// ---------------------------------------------------------------------------------------------------------
// Dipoles: mu[m] = sum_{i in m} q_i R_i (e*Angstrom), one warp per molecule, fixed shuffle-tree reduction.
// ---------------------------------------------------------------------------------------------------------
template <typename T>
cudaError_t segmented_dipole_forward(const T* q, const T* R, const int64_t* offsets, int64_t n_atoms,
                                     int64_t n_molecules, T* dipoles, cudaStream_t stream);

// grad_q[i] = grad_mu[m] . R_i, grad_R[i] = grad_mu[m] q_i for the molecule m of atom i (one thread per
// atom, molecule found by binary search); atoms outside every molecule get 0. Outputs fully written.
template <typename T>
cudaError_t segmented_dipole_backward(const T* grad_dipoles, const T* q, const T* R, const int64_t* offsets,
                                      int64_t n_atoms, int64_t n_molecules, T* grad_q, T* grad_R,
                                      cudaStream_t stream);

}  // namespace fastdipole::cuda
