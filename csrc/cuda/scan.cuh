// In-place exclusive prefix sum of int64 values on the GPU (torch-free, no CUB: a CUB scan alone takes
// ~10 s to compile for two architectures, this takes about one).
//
//   data[k] <- sum_{t < k} data[t]   for k in [0, n)
//
// Three launches: per-chunk totals, a one-block scan of the totals, then each chunk scanned from its
// offset. Integer arithmetic, so the result does not depend on scheduling.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

#include "cuda/device_utils.cuh"

namespace fastdipole::cuda::detail {

constexpr int kScanThreads = 256;  // must be a multiple of 32, at most 1024
constexpr int kScanItems = 8;      // values per thread per chunk
constexpr int64_t kScanChunk = int64_t(kScanThreads) * kScanItems;

// Exclusive scan of one value per thread over the block; *block_total gets the block's sum.
// Every thread of the block must call it (it synchronises the block).
__device__ __forceinline__ long long block_exclusive_scan(long long v, long long* warp_totals /* shared [32] */,
                                                          long long* block_total) {
  const int lane = threadIdx.x & (kWarp - 1);
  const int warp = threadIdx.x / kWarp;
  const int n_warps = blockDim.x / kWarp;
  long long x = v;
#pragma unroll
  for (int o = 1; o < kWarp; o *= 2) {
    const long long y = __shfl_up_sync(kFullMask, x, o);
    if (lane >= o) x += y;
  }
  if (lane == kWarp - 1) warp_totals[warp] = x;
  __syncthreads();
  if (warp == 0) {
    long long t = lane < n_warps ? warp_totals[lane] : 0;
#pragma unroll
    for (int o = 1; o < kWarp; o *= 2) {
      const long long y = __shfl_up_sync(kFullMask, t, o);
      if (lane >= o) t += y;
    }
    warp_totals[lane] = t;  // inclusive scan of the warp totals
  }
  __syncthreads();
  const long long prefix = warp > 0 ? warp_totals[warp - 1] : 0;
  *block_total = warp_totals[n_warps - 1];
  __syncthreads();  // warp_totals may be reused by the next call
  return prefix + x - v;
}

static __global__ void __launch_bounds__(kScanThreads) scan_chunk_totals_kernel(const int64_t* data, int64_t n,
                                                                         int64_t* totals) {
  __shared__ long long warp_totals[kWarp];
  const int64_t base = int64_t(blockIdx.x) * kScanChunk;
  long long sum = 0;
  for (int k = 0; k < kScanItems; ++k) {
    const int64_t idx = base + int64_t(k) * kScanThreads + threadIdx.x;
    if (idx < n) sum += data[idx];
  }
  long long total = 0;
  block_exclusive_scan(sum, warp_totals, &total);
  if (threadIdx.x == 0) totals[blockIdx.x] = total;
}

// One block: exclusive scan of the n_chunks chunk totals, in place.
static __global__ void __launch_bounds__(kScanThreads) scan_totals_kernel(int64_t* totals, int64_t n_chunks) {
  __shared__ long long warp_totals[kWarp];
  long long carry = 0;
  for (int64_t base = 0; base < n_chunks; base += kScanThreads) {
    const int64_t idx = base + threadIdx.x;
    const long long v = idx < n_chunks ? totals[idx] : 0;
    long long total = 0;
    const long long ex = block_exclusive_scan(v, warp_totals, &total);
    if (idx < n_chunks) totals[idx] = carry + ex;
    carry += total;
  }
}

static __global__ void __launch_bounds__(kScanThreads) scan_chunks_kernel(int64_t* data, int64_t n, const int64_t* totals) {
  __shared__ long long warp_totals[kWarp];
  const int64_t base = int64_t(blockIdx.x) * kScanChunk;
  long long offset = totals[blockIdx.x];
  for (int k = 0; k < kScanItems; ++k) {
    const int64_t idx = base + int64_t(k) * kScanThreads + threadIdx.x;
    const long long v = idx < n ? data[idx] : 0;
    long long total = 0;
    const long long ex = block_exclusive_scan(v, warp_totals, &total);
    if (idx < n) data[idx] = offset + ex;
    offset += total;
  }
}

// Bytes of device scratch exclusive_scan_inplace needs for n values.
inline size_t exclusive_scan_scratch_bytes(int64_t n) {
  return size_t(ceil_div(n > 0 ? n : 1, kScanChunk)) * sizeof(int64_t);
}

// scratch: at least exclusive_scan_scratch_bytes(n) bytes of device memory.
inline cudaError_t exclusive_scan_inplace(int64_t* data, int64_t n, int64_t* scratch, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  const int64_t n_chunks = ceil_div(n, kScanChunk);
  if (n_chunks > kMaxGridX) return cudaErrorInvalidValue;
  scan_chunk_totals_kernel<<<unsigned(n_chunks), kScanThreads, 0, stream>>>(data, n, scratch);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  scan_totals_kernel<<<1, kScanThreads, 0, stream>>>(scratch, n_chunks);
  err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  scan_chunks_kernel<<<unsigned(n_chunks), kScanThreads, 0, stream>>>(data, n, scratch);
  return cudaGetLastError();
}

}  // namespace fastdipole::cuda::detail
