// Neighbour pairs on the GPU (see launchers.h for the contract).
//
// Small molecules: one warp per receiving atom i scans its molecule in chunks of 32 candidates j; the
// pair test's ballot gives the count (count pass) and each pair's slot, ascending in j (fill pass), so rows
// come out sorted with no sort and no atomics.
// Large molecules (>= cell_list_min_atoms atoms): a cell list per molecule. Atoms are binned into cells
// at least `cutoff` wide (integer atomics: the counts are exact, the order inside a cell is not), and one
// warp per receiving atom scans the 27 neighbouring cells. The fill pass writes a row's neighbours in
// cell order into pair_first (as scratch), then places each j at its rank in the row (the j are distinct)
// into pair_second and overwrites pair_first with i: deterministic output whatever the binning order.
#include <algorithm>
#include <cmath>
#include <vector>

#include "cuda/device_utils.cuh"
#include "cuda/launchers.h"
#include "cuda/scan.cuh"

namespace fastdipole::cuda {
namespace {

using detail::ceil_div;
using detail::kFullMask;
using detail::kWarp;

constexpr int kWarpsPerBlock = 8;
constexpr int kBlockThreads = kWarpsPerBlock * kWarp;

// ---- small molecules: brute force, one warp per receiving atom ----

// kFill = false: row_offsets[i] <- number of neighbours of i.  kFill = true: writes the pairs of row i.
template <typename T, bool kFill>
__global__ void __launch_bounds__(kBlockThreads, 4)
    small_molecule_pairs_kernel(const T* __restrict__ R, int64_t n_atoms, const int64_t* __restrict__ offsets,
                                int64_t n_mol, T cutoff_sq, int64_t min_large_atoms, int64_t* row_offsets,
                                int64_t* __restrict__ first, int64_t* __restrict__ second) {
  const int lane = threadIdx.x & (kWarp - 1);
  const int64_t i = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
  if (i >= n_atoms) return;  // the whole warp leaves together
  const int64_t m = detail::find_molecule(offsets, n_mol, i);
  const int64_t begin = offsets[m];
  const int64_t end = offsets[m + 1];
  if (end - begin >= min_large_atoms) return;  // cell-list path

  const T xi = R[3 * i], yi = R[3 * i + 1], zi = R[3 * i + 2];
  int64_t slot = 0;
  int64_t row_begin = 0, row_end = 0;
  if (kFill) {
    row_begin = row_offsets[i];
    row_end = row_offsets[i + 1];
  }
  for (int64_t j0 = begin; j0 < end; j0 += kWarp) {
    const int64_t j = j0 + lane;
    bool hit = false;
    if (j < end && j != i) {
      hit = detail::is_pair_rn(R[3 * j] - xi, R[3 * j + 1] - yi, R[3 * j + 2] - zi, cutoff_sq);
    }
    const unsigned ballot = __ballot_sync(kFullMask, hit);
    if (kFill && hit) {
      const int64_t pos = row_begin + slot + __popc(ballot & ((1u << lane) - 1u));
      if (pos < row_end) {
        first[pos] = i;
        second[pos] = j;
      }
    }
    slot += __popc(ballot);
  }
  if (!kFill && lane == 0) row_offsets[i] = slot;
}

// ---- large molecules: cell list ----

// Bounding box of each large molecule's finite atoms (fmin/fmax are exact: any order gives the same box),
// and how many finite atoms it has. out: n_large x 8 doubles (lo[3], hi[3], n_finite, unused).
template <typename T>
__global__ void __launch_bounds__(256)
    bounding_box_kernel(const T* __restrict__ R, const CellGrid* __restrict__ grids, int64_t n_large, double* out) {
  __shared__ double sh[8][256 / kWarp];
  for (int64_t g = blockIdx.x; g < n_large; g += gridDim.x) {
    double v[7] = {INFINITY, INFINITY, INFINITY, -INFINITY, -INFINITY, -INFINITY, 0.0};
    for (int64_t i = grids[g].atom_begin + threadIdx.x; i < grids[g].atom_end; i += blockDim.x) {
      const double x = double(R[3 * i]), y = double(R[3 * i + 1]), z = double(R[3 * i + 2]);
      if (!(isfinite(x) && isfinite(y) && isfinite(z))) continue;
      v[0] = fmin(v[0], x);
      v[1] = fmin(v[1], y);
      v[2] = fmin(v[2], z);
      v[3] = fmax(v[3], x);
      v[4] = fmax(v[4], y);
      v[5] = fmax(v[5], z);
      v[6] += 1.0;
    }
#pragma unroll
    for (int o = kWarp / 2; o > 0; o /= 2) {
#pragma unroll
      for (int k = 0; k < 3; ++k) v[k] = fmin(v[k], __shfl_xor_sync(kFullMask, v[k], o));
#pragma unroll
      for (int k = 3; k < 6; ++k) v[k] = fmax(v[k], __shfl_xor_sync(kFullMask, v[k], o));
      v[6] += __shfl_xor_sync(kFullMask, v[6], o);
    }
    const int warp = threadIdx.x / kWarp;
    if ((threadIdx.x & (kWarp - 1)) == 0) {
      for (int k = 0; k < 7; ++k) sh[k][warp] = v[k];
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      for (int w = 1; w < int(blockDim.x) / kWarp; ++w) {
        for (int k = 0; k < 3; ++k) v[k] = fmin(v[k], sh[k][w]);
        for (int k = 3; k < 6; ++k) v[k] = fmax(v[k], sh[k][w]);
        v[6] += sh[6][w];
      }
      for (int k = 0; k < 7; ++k) out[8 * g + k] = v[k];
      out[8 * g + 7] = 0.0;
    }
    __syncthreads();
  }
}

template <typename T>
__device__ __forceinline__ bool atom_is_finite(const T* R, int64_t i) {
  return isfinite(R[3 * i]) && isfinite(R[3 * i + 1]) && isfinite(R[3 * i + 2]);
}

// atom_cell[i] <- global cell of atom i (-1 for non-finite atoms, which have no pairs); counts atoms per cell.
template <typename T>
__global__ void __launch_bounds__(256)
    assign_cells_kernel(const T* __restrict__ R, const CellGrid* __restrict__ grids, int64_t n_large,
                        int64_t* __restrict__ atom_cell, unsigned long long* cell_counts) {
  for (int64_t g = blockIdx.y; g < n_large; g += gridDim.y) {
    const CellGrid grid = grids[g];
    for (int64_t i = grid.atom_begin + int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < grid.atom_end;
         i += int64_t(gridDim.x) * blockDim.x) {
      if (!atom_is_finite(R, i)) {
        atom_cell[i] = -1;
        continue;
      }
      int32_t c[3];
      for (int d = 0; d < 3; ++d) {
        c[d] = cell_coordinate(double(R[3 * i + d]), grid.origin[d], grid.inv_width, grid.dims[d]);
      }
      const int64_t cell = grid.cell_begin + local_cell_index(c, grid.dims);
      atom_cell[i] = cell;
      atomicAdd(cell_counts + cell, 1ull);
    }
  }
}

// cell_atoms[cell_offsets[c] + k] <- the atoms of cell c (k from an atomic cursor: order not deterministic).
__global__ void __launch_bounds__(256)
    place_atoms_kernel(const CellGrid* __restrict__ grids, int64_t n_large, const int64_t* __restrict__ atom_cell,
                       const int64_t* __restrict__ cell_offsets, unsigned int* cursor, int32_t* cell_atoms) {
  for (int64_t g = blockIdx.y; g < n_large; g += gridDim.y) {
    const int64_t atom_begin = grids[g].atom_begin, atom_end = grids[g].atom_end;
    for (int64_t i = atom_begin + int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < atom_end;
         i += int64_t(gridDim.x) * blockDim.x) {
      const int64_t cell = atom_cell[i];
      if (cell < 0) continue;
      const unsigned int k = atomicAdd(cursor + cell, 1u);
      cell_atoms[cell_offsets[cell] + k] = int32_t(i);
    }
  }
}

// One warp per receiving atom of a large molecule, over the 27 cells around it.
// kFill = false: row_offsets[i] <- count. kFill = true: writes row i (unsorted, then ranked, see top).
template <typename T, bool kFill>
__global__ void __launch_bounds__(kBlockThreads, 4)
    cell_pairs_kernel(const T* __restrict__ R, const CellGrid* __restrict__ grids, int64_t n_large,
                      const int64_t* __restrict__ atom_cell, const int64_t* __restrict__ cell_offsets,
                      const int32_t* __restrict__ cell_atoms, T cutoff_sq, int64_t* row_offsets, int64_t* first,
                      int64_t* second) {
  const int lane = threadIdx.x & (kWarp - 1);
  const int64_t warp_in_grid = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
  const int64_t warp_stride = int64_t(gridDim.x) * kWarpsPerBlock;
  for (int64_t g = blockIdx.y; g < n_large; g += gridDim.y) {
    const CellGrid grid = grids[g];
    for (int64_t i = grid.atom_begin + warp_in_grid; i < grid.atom_end; i += warp_stride) {
      // Everything below is uniform across the warp (i is), so the ballots are safe.
      int64_t row_begin = 0, row_end = 0;
      if (kFill) {
        row_begin = row_offsets[i];
        row_end = row_offsets[i + 1];
      }
      const int64_t cell = atom_cell[i];
      int64_t slot = 0;
      if (cell >= 0) {
        const int64_t local = cell - grid.cell_begin;
        const int32_t cx = int32_t(local % grid.dims[0]);
        const int32_t cy = int32_t((local / grid.dims[0]) % grid.dims[1]);
        const int32_t cz = int32_t(local / (int64_t(grid.dims[0]) * grid.dims[1]));
        const T xi = R[3 * i], yi = R[3 * i + 1], zi = R[3 * i + 2];
        for (int32_t z = max(cz - 1, 0); z <= min(cz + 1, grid.dims[2] - 1); ++z) {
          for (int32_t y = max(cy - 1, 0); y <= min(cy + 1, grid.dims[1] - 1); ++y) {
            // Cells x-1..x+1 of one (y, z) row are consecutive: one run of cell_atoms.
            const int32_t x0 = max(cx - 1, 0), x1 = min(cx + 1, grid.dims[0] - 1);
            const int64_t row = grid.cell_begin + (int64_t(z) * grid.dims[1] + y) * grid.dims[0];
            const int64_t k_begin = cell_offsets[row + x0];
            const int64_t k_end = cell_offsets[row + x1 + 1];
            for (int64_t k0 = k_begin; k0 < k_end; k0 += kWarp) {
              const int64_t k = k0 + lane;
              bool hit = false;
              int64_t j = -1;
              if (k < k_end) {
                j = cell_atoms[k];
                hit = j != i && detail::is_pair_rn(R[3 * j] - xi, R[3 * j + 1] - yi, R[3 * j + 2] - zi, cutoff_sq);
              }
              const unsigned ballot = __ballot_sync(kFullMask, hit);
              if (kFill && hit) {
                const int64_t pos = row_begin + slot + __popc(ballot & ((1u << lane) - 1u));
                if (pos < row_end) first[pos] = j;  // scratch: unsorted neighbours
              }
              slot += __popc(ballot);
            }
          }
        }
      }
      if (!kFill) {
        if (lane == 0) row_offsets[i] = slot;
        continue;
      }
      // Sort the row: each j goes to its rank among the row's (distinct) neighbours.
      __syncwarp();
      const int64_t n = row_end - row_begin;
      for (int64_t a = lane; a < n; a += kWarp) {
        const int64_t ja = first[row_begin + a];
        int64_t rank = 0;
        for (int64_t b = 0; b < n; ++b) rank += first[row_begin + b] < ja ? 1 : 0;
        second[row_begin + rank] = ja;
      }
      __syncwarp();
      for (int64_t a = lane; a < n; a += kWarp) first[row_begin + a] = i;
      __syncwarp();
    }
  }
}

inline cudaError_t last_error() { return cudaGetLastError(); }

}  // namespace

template <typename T>
NeighborPairsLauncher<T>::NeighborPairsLauncher(const T* R, int64_t n_atoms, const int64_t* offsets_device,
                                                const int64_t* offsets_host, int64_t n_molecules, double cutoff,
                                                int64_t cell_list_min_atoms, ScratchAllocator& scratch,
                                                cudaStream_t stream)
    : R_(R),
      n_atoms_(n_atoms),
      offsets_(offsets_device),
      offsets_host_(offsets_host),
      n_mol_(n_molecules),
      cutoff_(cutoff),
      cutoff_sq_(T(cutoff * cutoff)),  // as the CPU kernels
      min_atoms_(cell_list_min_atoms < 1 ? 1 : cell_list_min_atoms),
      scratch_(scratch),
      stream_(stream) {}

template <typename T>
cudaError_t NeighborPairsLauncher<T>::count(int64_t* row_offsets, int64_t* n_pairs) {
  *n_pairs = 0;
  row_offsets_ = row_offsets;
  cudaError_t err = cudaMemsetAsync(row_offsets, 0, sizeof(int64_t) * size_t(n_atoms_ + 1), stream_);
  if (err != cudaSuccess) return err;
  if (n_atoms_ == 0 || n_mol_ == 0) return cudaSuccess;

  // Small molecules.
  const int64_t small_blocks = ceil_div(n_atoms_, kWarpsPerBlock);
  if (small_blocks > detail::kMaxGridX) return cudaErrorInvalidValue;
  small_molecule_pairs_kernel<T, false><<<unsigned(small_blocks), kBlockThreads, 0, stream_>>>(
      R_, n_atoms_, offsets_, n_mol_, cutoff_sq_, min_atoms_, row_offsets, nullptr, nullptr);
  if ((err = last_error()) != cudaSuccess) return err;

  // Large molecules: plan their grids from their bounding boxes (one sync), bin atoms, count.
  std::vector<CellGrid> grids;
  for (int64_t m = 0; m < n_mol_; ++m) {
    const int64_t n = offsets_host_[m + 1] - offsets_host_[m];
    if (n >= min_atoms_) {
      CellGrid g;
      g.atom_begin = offsets_host_[m];
      g.atom_end = offsets_host_[m + 1];
      grids.push_back(g);
      max_large_atoms_ = std::max(max_large_atoms_, n);
    }
  }
  n_large_ = int64_t(grids.size());
  if (n_large_ > 0) {
    grids_ = static_cast<CellGrid*>(scratch_.allocate(sizeof(CellGrid) * grids.size()));
    auto* boxes_dev = static_cast<double*>(scratch_.allocate(sizeof(double) * 8 * grids.size()));
    if ((err = cudaMemcpyAsync(grids_, grids.data(), sizeof(CellGrid) * grids.size(), cudaMemcpyHostToDevice,
                               stream_)) != cudaSuccess)
      return err;
    const unsigned box_blocks = unsigned(std::min<int64_t>(n_large_, 65535));
    bounding_box_kernel<T><<<box_blocks, 256, 0, stream_>>>(R_, grids_, n_large_, boxes_dev);
    if ((err = last_error()) != cudaSuccess) return err;
    std::vector<double> boxes(8 * grids.size());
    if ((err = cudaMemcpyAsync(boxes.data(), boxes_dev, sizeof(double) * boxes.size(), cudaMemcpyDeviceToHost,
                               stream_)) != cudaSuccess)
      return err;
    if ((err = cudaStreamSynchronize(stream_)) != cudaSuccess) return err;

    int64_t n_cells = 0;
    for (size_t g = 0; g < grids.size(); ++g) {
      plan_cell_grid(grids[g], &boxes[8 * g], &boxes[8 * g + 3], int64_t(boxes[8 * g + 6]), cutoff_);
      grids[g].cell_begin = n_cells;
      n_cells += grids[g].n_cells();
    }
    if ((err = cudaMemcpyAsync(grids_, grids.data(), sizeof(CellGrid) * grids.size(), cudaMemcpyHostToDevice,
                               stream_)) != cudaSuccess)
      return err;

    cell_offsets_ = static_cast<int64_t*>(scratch_.allocate(sizeof(int64_t) * size_t(n_cells + 1)));
    auto* cursor = static_cast<unsigned int*>(scratch_.allocate(sizeof(unsigned int) * size_t(n_cells)));
    atom_cell_ = static_cast<int64_t*>(scratch_.allocate(sizeof(int64_t) * size_t(n_atoms_)));
    cell_atoms_ = static_cast<int32_t*>(scratch_.allocate(sizeof(int32_t) * size_t(n_atoms_)));
    auto* scan_scratch = static_cast<int64_t*>(scratch_.allocate(detail::exclusive_scan_scratch_bytes(n_cells + 1)));
    if ((err = cudaMemsetAsync(cell_offsets_, 0, sizeof(int64_t) * size_t(n_cells + 1), stream_)) != cudaSuccess)
      return err;
    if ((err = cudaMemsetAsync(cursor, 0, sizeof(unsigned int) * size_t(n_cells), stream_)) != cudaSuccess)
      return err;

    const dim3 atom_grid(unsigned(std::min<int64_t>(ceil_div(max_large_atoms_, 256), 65535)),
                         unsigned(std::min<int64_t>(n_large_, 65535)));
    assign_cells_kernel<T><<<atom_grid, 256, 0, stream_>>>(R_, grids_, n_large_, atom_cell_,
                                                           reinterpret_cast<unsigned long long*>(cell_offsets_));
    if ((err = last_error()) != cudaSuccess) return err;
    if ((err = detail::exclusive_scan_inplace(cell_offsets_, n_cells + 1, scan_scratch, stream_)) != cudaSuccess)
      return err;
    place_atoms_kernel<<<atom_grid, 256, 0, stream_>>>(grids_, n_large_, atom_cell_, cell_offsets_, cursor,
                                                       cell_atoms_);
    if ((err = last_error()) != cudaSuccess) return err;

    const dim3 warp_grid(unsigned(std::min<int64_t>(ceil_div(max_large_atoms_, kWarpsPerBlock), 65535)),
                         unsigned(std::min<int64_t>(n_large_, 65535)));
    cell_pairs_kernel<T, false><<<warp_grid, kBlockThreads, 0, stream_>>>(
        R_, grids_, n_large_, atom_cell_, cell_offsets_, cell_atoms_, cutoff_sq_, row_offsets, nullptr, nullptr);
    if ((err = last_error()) != cudaSuccess) return err;
  }

  // Counts -> offsets (row_offsets[n_atoms] is still 0, so it becomes the total), then read the total.
  auto* scan_scratch = static_cast<int64_t*>(scratch_.allocate(detail::exclusive_scan_scratch_bytes(n_atoms_ + 1)));
  if ((err = detail::exclusive_scan_inplace(row_offsets, n_atoms_ + 1, scan_scratch, stream_)) != cudaSuccess)
    return err;
  int64_t total = 0;
  if ((err = cudaMemcpyAsync(&total, row_offsets + n_atoms_, sizeof(int64_t), cudaMemcpyDeviceToHost, stream_)) !=
      cudaSuccess)
    return err;
  if ((err = cudaStreamSynchronize(stream_)) != cudaSuccess) return err;
  *n_pairs = total;
  return cudaSuccess;
}

template <typename T>
cudaError_t NeighborPairsLauncher<T>::fill(int64_t* pair_first, int64_t* pair_second) {
  if (row_offsets_ == nullptr) return cudaErrorInvalidValue;  // count() first
  if (n_atoms_ == 0 || n_mol_ == 0) return cudaSuccess;
  const int64_t small_blocks = ceil_div(n_atoms_, kWarpsPerBlock);
  small_molecule_pairs_kernel<T, true><<<unsigned(small_blocks), kBlockThreads, 0, stream_>>>(
      R_, n_atoms_, offsets_, n_mol_, cutoff_sq_, min_atoms_, row_offsets_, pair_first,
      pair_second);
  cudaError_t err = last_error();
  if (err != cudaSuccess || n_large_ == 0) return err;
  const dim3 warp_grid(unsigned(std::min<int64_t>(ceil_div(max_large_atoms_, kWarpsPerBlock), 65535)),
                       unsigned(std::min<int64_t>(n_large_, 65535)));
  cell_pairs_kernel<T, true><<<warp_grid, kBlockThreads, 0, stream_>>>(
      R_, grids_, n_large_, atom_cell_, cell_offsets_, cell_atoms_, cutoff_sq_, row_offsets_,
      pair_first, pair_second);
  return last_error();
}

template class NeighborPairsLauncher<float>;
template class NeighborPairsLauncher<double>;

}  // namespace fastdipole::cuda
