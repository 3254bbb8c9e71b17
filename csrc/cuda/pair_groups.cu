// Pairs grouped by sending atom for the envsum backward's featsum (see launchers.h).
//
// A stable radix sort (CUB) of 32-bit sender keys over only the bits n_atoms needs (14 bits, two passes,
// for a 15,000-atom batch; a torch sort of the int64 indices runs all 64 bits), then one kernel that turns
// the sorted keys into group offsets. Deterministic: the sort is stable and every offset has one writer.
#include <cub/device/device_radix_sort.cuh>

#include "cuda/device_utils.cuh"
#include "cuda/launchers.h"

namespace fastdipole::cuda {
namespace {

constexpr int kThreads = 256;

inline int key_bits(int64_t n_atoms) {  // bits of the largest key, n_atoms (the group of bad senders)
  int bits = 1;
  while (bits < 32 && (int64_t(1) << bits) <= n_atoms) ++bits;
  return bits;
}

struct GroupScratch {
  size_t keys_in = 0, keys_out = 0, values_in = 0, cub = 0, cub_bytes = 0, total = 0;
};

inline size_t align256(size_t b) { return (b + 255) / 256 * 256; }

GroupScratch group_scratch(int64_t n_pairs, int64_t n_atoms) {
  GroupScratch g;
  const size_t key_bytes = align256(sizeof(uint32_t) * size_t(n_pairs));
  g.keys_in = 0;
  g.keys_out = key_bytes;
  g.values_in = 2 * key_bytes;
  g.cub = g.values_in + align256(sizeof(int64_t) * size_t(n_pairs));
  cub::DeviceRadixSort::SortPairs(nullptr, g.cub_bytes, static_cast<const uint32_t*>(nullptr),
                                  static_cast<uint32_t*>(nullptr), static_cast<const int64_t*>(nullptr),
                                  static_cast<int64_t*>(nullptr), int(n_pairs), 0, key_bits(n_atoms));
  g.total = g.cub + align256(g.cub_bytes);
  return g;
}

// key = sender, or n_atoms for a sender outside [0, n_atoms) (sorted last, outside every group); value = p.
__global__ void __launch_bounds__(kThreads)
    sender_keys_kernel(const int64_t* __restrict__ pair_second, int64_t n_pairs, int64_t n_atoms,
                       uint32_t* __restrict__ keys, int64_t* __restrict__ values) {
  for (int64_t p = int64_t(blockIdx.x) * kThreads + threadIdx.x; p < n_pairs; p += int64_t(gridDim.x) * kThreads) {
    const int64_t j = pair_second[p];
    keys[p] = uint32_t((j >= 0 && j < n_atoms) ? j : n_atoms);
    values[p] = p;
  }
}

// offsets[j] = first position q with keys[q] >= j, for j = 0..n_atoms: position q writes the j in
// (keys[q - 1], keys[q]] (keys[-1] = -1, keys[n_pairs] = n_atoms).
__global__ void __launch_bounds__(kThreads)
    group_offsets_kernel(const uint32_t* __restrict__ keys, int64_t n_pairs, int64_t n_atoms,
                         int64_t* __restrict__ offsets) {
  for (int64_t q = int64_t(blockIdx.x) * kThreads + threadIdx.x; q <= n_pairs; q += int64_t(gridDim.x) * kThreads) {
    const int64_t prev = q > 0 ? int64_t(keys[q - 1]) : -1;
    const int64_t cur = q < n_pairs ? int64_t(keys[q]) : n_atoms;
    for (int64_t j = prev + 1; j <= cur; ++j) offsets[j] = q;
  }
}

unsigned grid_for(int64_t n) {
  const int64_t blocks = detail::ceil_div(n > 0 ? n : 1, kThreads);
  return unsigned(blocks < 65536 ? blocks : 65536);
}

}  // namespace

size_t group_pairs_by_sender_scratch_bytes(int64_t n_pairs, int64_t n_atoms) {
  if (n_pairs <= 0 || n_pairs > int64_t(INT32_MAX) || n_atoms >= int64_t(UINT32_MAX)) return 8;
  return group_scratch(n_pairs, n_atoms).total;
}

cudaError_t group_pairs_by_sender(const int64_t* pair_second, int64_t n_pairs, int64_t n_atoms, void* scratch,
                                  int64_t* order, int64_t* offsets, cudaStream_t stream) {
  if (n_pairs > int64_t(INT32_MAX) || n_atoms >= int64_t(UINT32_MAX)) return cudaErrorInvalidValue;
  if (n_pairs == 0) return cudaMemsetAsync(offsets, 0, sizeof(int64_t) * size_t(n_atoms + 1), stream);
  const GroupScratch g = group_scratch(n_pairs, n_atoms);
  auto* base = static_cast<unsigned char*>(scratch);
  auto* keys_in = reinterpret_cast<uint32_t*>(base + g.keys_in);
  auto* keys_out = reinterpret_cast<uint32_t*>(base + g.keys_out);
  auto* values_in = reinterpret_cast<int64_t*>(base + g.values_in);
  sender_keys_kernel<<<grid_for(n_pairs), kThreads, 0, stream>>>(pair_second, n_pairs, n_atoms, keys_in, values_in);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  size_t cub_bytes = g.cub_bytes;
  err = cub::DeviceRadixSort::SortPairs(base + g.cub, cub_bytes, keys_in, keys_out, values_in, order, int(n_pairs), 0,
                                        key_bits(n_atoms), stream);
  if (err != cudaSuccess) return err;
  group_offsets_kernel<<<grid_for(n_pairs + 1), kThreads, 0, stream>>>(keys_out, n_pairs, n_atoms, offsets);
  return cudaGetLastError();
}

}  // namespace fastdipole::cuda
