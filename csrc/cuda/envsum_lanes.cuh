// Feature-lane envsum kernels (the default for n_sens <= 32 and n_features >= 16, as csrc/cuda/kernel_plan.h
// plans; envsum.cu launches them). One warp per (receiving atom i, chunk of 32 * CT
// features): lane l owns the features f = f0 + l + 32 c (c < CT) and every sensitivity v < S <= SV, so the
// forward's accumulators and the backward's grad_env values live in registers for the whole row, and each
// sender's feature row is read once per pair with coalesced 128-byte loads. The pairs of a row come in tiles
// of 32: lane k stages pair k (sender, 1/r, cutoff factor) in shared memory, then the tile's sensitivities
// are computed by all lanes (all threads of the block in the backward), after which every lane reads them as
// broadcasts. The forward needs no block-wide barrier at all.
//
// Same arithmetic and summation order per output element as the other kernels (pairs in order, dropped
// terms skipped), so results are deterministic; only the backward's sums over features use a different
// (fixed) tree than the CPU's left-to-right loop.
#pragma once

#include <cstddef>
#include <cstdint>

#include "common/hipnn_math.h"
#include "cuda/device_utils.cuh"
#include "cuda/envsum_pairs.cuh"
#include "cuda/launchers.h"

namespace fastdipole::cuda::lanes {

using detail::kWarp;
using detail::read_pair;

constexpr int kForwardWarps = 4;  // warps per block of the forward (independent tasks)
constexpr int kMaxBackwardWarps = 4;  // feature chunks of one atom that run side by side in a backward block
constexpr int kPairBatch = 4;     // forward: feature rows of this many pairs in flight per lane

// Per-tile staging of up to 32 pairs of one row. Rows k >= nk have j = -1; readers skip rows with j < 0
// (their s are not written).
template <typename T, int SV>
struct alignas(16) PairTile {
  T s[kWarp][SV];  // s_v of pair k, 0 where dropped (s <= 1e-10, r > cutoff) or v >= S
  T inv_r[kWarp];
  T cut[kWarp];    // cutoff factor; -1 marks "no sensitivities" (r > cutoff)
  T dcut[kWarp];   // its derivative d/dr
  T inv_mu[SV];    // 1 / mu_v and -0.5 sigma_v^2, rounded as the hoisted CPU kernels round them
  T nhs2[SV];
  int64_t j[kWarp];  // sender, -1 for an invalid or missing pair
};

// Staging of pairs [p0, p0 + nk) of row i (nk <= 32), in two steps with a barrier between them:
// stage_pairs_lanes: lane k of one warp reads pair k with read_pair (and lane v hoists 1 / mu_v,
//   -0.5 sigma_v^2); a pair with r > cutoff keeps its sender (the backward writes its zero featsum term) but
//   gets no sensitivities.
// stage_sensitivities: the nk x SV sensitivities, spread over `n_threads` threads (a row of ~14 pairs would
//   leave half the lanes of a pair-per-lane layout idle).
template <typename T, int SV>
__device__ __forceinline__ void stage_pairs_lanes(const EnvsumArgs<T>& a, int64_t i, int64_t p0, int nk, int lane,
                                                  PairTile<T, SV>& t) {
  const int S = int(a.n_sens);
  int64_t j = -1;
  T inv_r = T(0), c = T(-1), dc = T(0);
  if (lane < nk) read_pair(a, i, p0 + lane, j, inv_r, c, dc);
  t.j[lane] = j;
  t.inv_r[lane] = inv_r;
  t.cut[lane] = c;
  t.dcut[lane] = dc;
  if (lane < SV) {
    t.inv_mu[lane] = lane < S ? T(1) / a.mu[lane] : T(0);
    t.nhs2[lane] = lane < S ? neg_half_square(a.sigma[lane]) : T(0);
  }
}

template <typename T, int SV>
__device__ __forceinline__ void stage_sensitivities(int S, int nk, int thread, int n_threads, PairTile<T, SV>& t) {
  for (int e = thread; e < nk * SV; e += n_threads) {
    const int k = e / SV, u = e - k * SV;  // SV is a compile-time constant: no division
    const T ck = t.cut[k];
    t.s[k][u] = (u < S && ck != T(-1))  // c = -1 also for pairs that do not count
                    ? detail::active_sensitivity(t.inv_r[k], t.inv_mu[u], t.nhs2[u], ck)
                    : T(0);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Forward: env[i, v, f] = sum over the row's pairs k (in order) of s[k][v] z[j_k, f], dropped terms skipped.
// Block: kForwardWarps independent warps; warp task = i * n_chunks + chunk. The sender feature rows of
// kPairBatch pairs are loaded per lane before their terms are added.
// ---------------------------------------------------------------------------------------------------------
template <typename T, int CT>
__device__ __forceinline__ void load_sender_rows(const EnvsumArgs<T>& a, const int64_t* tile_j, int k0, int64_t f0,
                                                 T (&zv)[kPairBatch][CT]) {
#pragma unroll
  for (int q = 0; q < kPairBatch; ++q) {
    const int64_t j = tile_j[k0 + q];
#pragma unroll
    for (int c = 0; c < CT; ++c) {
      const int64_t f = f0 + kWarp * c;
      zv[q][c] = (j >= 0 && f < a.n_features) ? a.z[j * a.n_features + f] : T(0);
    }
  }
}

// Active groups of 4 sensitivity slots of pair k, as a bit mask (bit g: one of s[k][4g .. 4g + 4) is not 0),
// the same on every lane: lane g tests group g and a ballot gathers the bits, so branches on the mask are
// uniform and ptxas knows it. A pair's active sensitivities form a narrow band (on QM9 with HIP-NN's initial
// mu / sigma, 34 % of the (pair, v) terms, 46 % of the groups of 4), and the lanes of a warp all work on the
// same pair: skipping inactive groups saves their compares and FMAs (terms inside an active group stay
// individually skipped, as before; results are unchanged).
// Whether one of the 4 slots s4[0 .. 4) is active (| rather than ||: no branches).
template <typename T>
__device__ __forceinline__ bool any_active4(const T* s4) {
  return (s4[0] != T(0)) | (s4[1] != T(0)) | (s4[2] != T(0)) | (s4[3] != T(0));
}

// Whether the group of slots [u0, u0 + 4) is in an active_groups mask.
__device__ __forceinline__ bool group_active(unsigned groups, int u0) { return ((groups >> (u0 / 4)) & 1u) != 0; }

template <typename T, int SV>
__device__ __forceinline__ unsigned active_groups(const T* s_k, int lane) {
  static_assert(SV % 4 == 0 && SV / 4 <= kWarp, "sensitivity slots come in groups of 4");
  const bool mine = (lane < SV / 4) & any_active4(s_k + 4 * (lane < SV / 4 ? lane : 0));
  return __ballot_sync(detail::kFullMask, mine);
}

template <typename T, int SV, int CT>
__device__ __forceinline__ void add_batch_terms(const T (&s)[kWarp][SV], const int64_t* tile_j, int k0, int lane,
                                                const T (&zv)[kPairBatch][CT], T (&acc)[SV][CT]) {
#pragma unroll
  for (int q = 0; q < kPairBatch; ++q) {
    if (tile_j[k0 + q] < 0) continue;  // uniform over the warp; also the rows past nk
    const T* sk = s[k0 + q];
    const unsigned groups = active_groups<T, SV>(sk, lane);
#pragma unroll
    for (int u0 = 0; u0 < SV; u0 += 4) {
      if (!group_active(groups, u0)) continue;  // uniform: the pair's inactive band
#pragma unroll
      for (int u = u0; u < u0 + 4; ++u) {
        const T sv = sk[u];
#pragma unroll
        for (int c = 0; c < CT; ++c) acc[u][c] = (sv != T(0)) ? acc[u][c] + sv * zv[q][c] : acc[u][c];
      }
    }
  }
}

// At least 1 block per SM: ptxas may use every register it wants (up to 255 per thread, no spills).
template <typename T, int SV, int CT>
__global__ void __launch_bounds__(kForwardWarps * kWarp, 1)
    envsum_forward_lanes_kernel(const EnvsumArgs<T> a, int64_t n_chunks, T* __restrict__ env) {
  __shared__ PairTile<T, SV> tiles[kForwardWarps];
  const int warp = int(threadIdx.x) / kWarp, lane = int(threadIdx.x) % kWarp;
  const int64_t task = int64_t(blockIdx.x) * kForwardWarps + warp;
  if (task >= a.n_atoms * n_chunks) return;  // the whole warp
  const int64_t S = a.n_sens, F = a.n_features;
  const int64_t i = task / n_chunks;
  const int64_t f0 = (task - i * n_chunks) * (kWarp * CT) + lane;  // this lane's first feature
  PairTile<T, SV>& t = tiles[warp];
  int64_t begin, end;
  detail::row_range(a.row_offsets, i, a.n_pairs, begin, end);

  T acc[SV][CT];
#pragma unroll
  for (int u = 0; u < SV; ++u) {
#pragma unroll
    for (int c = 0; c < CT; ++c) acc[u][c] = T(0);
  }
  for (int64_t p0 = begin; p0 < end; p0 += kWarp) {
    const int nk = int(min(int64_t(kWarp), end - p0));
    __syncwarp();  // the previous tile is consumed
    stage_pairs_lanes(a, i, p0, nk, lane, t);
    __syncwarp();
    stage_sensitivities(int(S), nk, lane, kWarp, t);
    __syncwarp();
    // Batches start at multiples of kPairBatch below nk <= 32, so their rows stay inside the tile, and rows
    // past nk have j = -1: no tail loop needed.
    for (int k0 = 0; k0 < nk; k0 += kPairBatch) {
      T zv[kPairBatch][CT];
      load_sender_rows(a, t.j, k0, f0, zv);
      add_batch_terms(t.s, t.j, k0, lane, zv, acc);
    }
  }
#pragma unroll
  for (int u = 0; u < SV; ++u) {
    if (u >= S) break;
#pragma unroll
    for (int c = 0; c < CT; ++c) {
      const int64_t f = f0 + kWarp * c;
      if (f < F) env[(i * S + u) * F + f] = acc[u][c];
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// Sum over the 32 lanes of each of P values d[0..P) (P = 8, 16 or 32) in P - 1 + 5 - log2(P) shuffles
// instead of 5 P: at each of the first log2(P) steps a lane keeps half of its values, swaps the other half
// with its partner and adds, so the values get spread over the lanes. On return, lane l holds the total of
// value l >> (5 - log2 P) (every lane with the same value index gets the same bits).
// ---------------------------------------------------------------------------------------------------------
template <int P>
struct Log2 {
  static constexpr int value = P == 8 ? 3 : (P == 16 ? 4 : 5);
  static_assert(P == 8 || P == 16 || P == 32, "transposing warp sum of 8, 16 or 32 values");
};

// One halving step: N values -> N / 2, exchanged with the lane OFFSET away (indices are compile-time, so
// d stays in registers). The upper lane of each pair keeps the upper half and sends the lower one.
template <typename T, int N, int OFFSET, int P>
__device__ __forceinline__ void transpose_halve(T (&d)[P], int lane) {
  const bool upper = (lane & OFFSET) != 0;
#pragma unroll
  for (int m = 0; m < N / 2; ++m) {
    const T send = upper ? d[m] : d[m + N / 2];
    const T keep = upper ? d[m + N / 2] : d[m];
    d[m] = keep + __shfl_xor_sync(detail::kFullMask, send, OFFSET);
  }
}

template <typename T, int P>
__device__ __forceinline__ T warp_transpose_sum(T (&d)[P], int lane) {
  constexpr int L = Log2<P>::value;
  if constexpr (P == 32) transpose_halve<T, 32, 16>(d, lane);
  if constexpr (P >= 16) transpose_halve<T, 16, (16 >> (L - 4))>(d, lane);
  transpose_halve<T, 8, (16 >> (L - 3))>(d, lane);
  transpose_halve<T, 4, (16 >> (L - 2))>(d, lane);
  transpose_halve<T, 2, (16 >> (L - 1))>(d, lane);
#pragma unroll
  for (int offset = 16 >> L; offset >= 1; offset /= 2) d[0] += __shfl_xor_sync(detail::kFullMask, d[0], offset);
  return d[0];
}

template <int SV>
struct PaddedValues {  // values of the transposing warp sum: SV rounded up to 8, 16 or 32
  static constexpr int value = SV <= 8 ? 8 : (SV <= 16 ? 16 : 32);
};

// Shared memory of the backward: PairTile | red[W][32][SV] (each warp's dS partials of the tile) |
// ds_dr, ds_dmu, ds_dsigma [32][SV]  (T)
template <typename T, int SV>
size_t backward_shared_bytes(int n_warps) {
  return sizeof(PairTile<T, SV>) + sizeof(T) * size_t(n_warps + 3) * kWarp * SV;
}

// ---------------------------------------------------------------------------------------------------------
// Backward pass 1: block per receiving atom i with W warps; warp w takes feature chunks w, w + W, ... and
// holds grad_env[i, :, chunk] in registers. Per tile of 32 pairs (pairs staged by warp 0, sensitivities by
// the block), for each pair k:
//   C[p, f]   = sum_v s[k][v] dE[v, f]            (lane's features; v in order, dropped terms skipped;
//                                                  C is null when grad_z is not wanted)
//   dS[k, v] += sum_f dE[v, f] z[j_k, f]          (lane's features, then a transposing warp sum; chunks of
//                                                  a warp in order, then warps in order)
// then, per tile: dS and the derivatives of s once per active (pair, v) term, spread over the block, and from
// them grad_r[p] = sum_v dS ds/dr (one thread per pair, v in order) and this atom's grad_mu / grad_sigma
// partials (one thread per v, pairs in order, double), as finish_tile computes them.
// ---------------------------------------------------------------------------------------------------------
template <typename T, int SV, int CT>
__global__ void __launch_bounds__(kMaxBackwardWarps * kWarp, 1)
    envsum_backward_lanes_kernel(const EnvsumArgs<T> a, const T* __restrict__ dE, int64_t n_chunks,
                                 T* __restrict__ C, T* __restrict__ grad_r,
                                 double* __restrict__ part_mu, double* __restrict__ part_sigma) {
  constexpr int P = PaddedValues<SV>::value;
  constexpr int kShift = 5 - Log2<P>::value;  // lane l holds value l >> kShift after the warp sum
  extern __shared__ __align__(16) unsigned char shared_raw[];
  PairTile<T, SV>& t = *reinterpret_cast<PairTile<T, SV>*>(shared_raw);
  T* red = reinterpret_cast<T*>(shared_raw + sizeof(PairTile<T, SV>));  // [W][32][SV]
  const int n_warps = int(blockDim.x) / kWarp;
  T* ds_dr_sh = red + n_warps * kWarp * SV;  // [32][SV] each
  T* ds_dmu_sh = ds_dr_sh + kWarp * SV;
  T* ds_dsigma_sh = ds_dmu_sh + kWarp * SV;

  const int warp = int(threadIdx.x) / kWarp, lane = int(threadIdx.x) % kWarp;
  const int S = int(a.n_sens);
  const int64_t F = a.n_features, N = a.n_atoms;
  const int64_t i = blockIdx.x;
  const T* dE_i = dE + i * S * F;
  T* red_w = red + warp * kWarp * SV;

  // grad_env of the chunk this warp holds: the first before the staging, later ones when the warp reaches
  // them (again per tile only when the warp has several chunks)
  T g[SV][CT];
  int64_t held = -1;
#define FASTDIPOLE_LANES_LOAD_GRAD_ENV(chunk)                         \
  do {                                                                \
    const int64_t gf0 = (chunk) * (kWarp * CT) + lane;                \
    _Pragma("unroll") for (int u = 0; u < SV; ++u) {                  \
      _Pragma("unroll") for (int c = 0; c < CT; ++c) {                \
        const int64_t f = gf0 + kWarp * c;                            \
        g[u][c] = (u < S && f < F) ? dE_i[u * F + f] : T(0);          \
      }                                                               \
    }                                                                 \
    held = (chunk);                                                   \
  } while (0)
  if (warp < n_chunks) FASTDIPOLE_LANES_LOAD_GRAD_ENV(int64_t(warp));  // in flight during the staging
  double gm = 0.0, gs = 0.0;  // thread v < S: this atom's grad_mu / grad_sigma partials of s_v
  int64_t begin, end;
  detail::row_range(a.row_offsets, i, a.n_pairs, begin, end);
  for (int64_t p0 = begin; p0 < end; p0 += kWarp) {
    const int nk = int(min(int64_t(kWarp), end - p0));
    __syncthreads();  // the previous tile is consumed
    if (warp == 0) stage_pairs_lanes(a, i, p0, nk, lane, t);
    __syncthreads();
    stage_sensitivities(S, nk, int(threadIdx.x), int(blockDim.x), t);
    __syncthreads();

    // featsum terms of pair k for the warp's current chunk, to C (a pair without sensitivities gets 0).
    // v outer, columns inner: each s != 0 test is used CT times in a row
    // (with the columns outer, ptxas kept the S predicates alive across columns and re-derived / spilled
    // them, ~100 extra instructions per pair); same sums, v in order per column.
    auto add_featsum_terms = [&](int k, const T* sk, unsigned groups, int64_t f0) {
      if (C == nullptr) return;
      T cv[CT];
#pragma unroll
      for (int c = 0; c < CT; ++c) cv[c] = T(0);
#pragma unroll
      for (int u0 = 0; u0 < SV; u0 += 4) {
        if (!group_active(groups, u0)) continue;
#pragma unroll
        for (int u = u0; u < u0 + 4; ++u) {
          const T s = sk[u];
          if (s != T(0)) {
#pragma unroll
            for (int c = 0; c < CT; ++c) cv[c] += s * g[u][c];
          }
        }
      }
#pragma unroll
      for (int c = 0; c < CT; ++c) {
        const int64_t f = f0 + kWarp * c;
        if (f < F) C[(p0 + k) * F + f] = cv[c];
      }
    };

    for (int64_t chunk = warp; chunk < n_chunks; chunk += n_warps) {
      if (held != chunk) FASTDIPOLE_LANES_LOAD_GRAD_ENV(chunk);
      const int64_t f0 = chunk * (kWarp * CT) + lane;
      const bool first_chunk = chunk == warp;
      // sender features of pair k (zero for an invalid pair), one pair ahead
      auto load_z = [&](int k, T (&zv)[CT]) {
        const int64_t j = t.j[k];
#pragma unroll
        for (int c = 0; c < CT; ++c) {
          const int64_t f = f0 + kWarp * c;
          zv[c] = (j >= 0 && f < F) ? a.z[j * F + f] : T(0);
        }
      };
      T z_next[CT];
      load_z(0, z_next);
      for (int k = 0; k < nk; ++k) {
        T zv[CT];
#pragma unroll
        for (int c = 0; c < CT; ++c) zv[c] = z_next[c];
        if (k + 1 < nk) load_z(k + 1, z_next);
        if (t.j[k] < 0) continue;  // uniform over the warp
        const T* sk = t.s[k];
        const unsigned groups = active_groups<T, SV>(sk, lane);  // uniform: inactive groups are skipped
        add_featsum_terms(k, sk, groups, f0);
        // this lane's dS partials; 0 for the slots past SV and for inactive groups (which nothing reads)
        T d[P];
#pragma unroll
        for (int u = 0; u < P; ++u) d[u] = T(0);
#pragma unroll
        for (int u0 = 0; u0 < SV; u0 += 4) {
          if (!group_active(groups, u0)) continue;
#pragma unroll
          for (int u = u0; u < u0 + 4; ++u) {
#pragma unroll
            for (int c = 0; c < CT; ++c) d[u] += g[u][c] * zv[c];
          }
        }
        const T total = warp_transpose_sum<T, P>(d, lane);
        const int v = lane >> kShift;
        if ((lane & ((1 << kShift) - 1)) == 0 && v < S) {
          T* slot = red_w + k * SV + v;
          *slot = first_chunk ? total : *slot + total;
        }
      }
    }
    __syncthreads();  // every warp's dS partials of the tile are in red

    // Per active (pair, v) term, spread over the block: dS (warps summed in order, into red[0]; each
    // element has one owner) and the derivatives of s from the staged 1/r and cutoff factors.
    for (int idx = int(threadIdx.x); idx < nk * S; idx += int(blockDim.x)) {
      const int k = idx / S, v = idx - k * S;
      if (t.j[k] < 0 || t.s[k][v] == T(0)) continue;
      T dS = red[k * SV + v];
      for (int w = 1; w < n_warps && w < n_chunks; ++w) dS += red[(w * kWarp + k) * SV + v];
      red[k * SV + v] = dS;
      const T g_v = exp(gaussian_exponent(t.inv_r[k], t.inv_mu[v], t.nhs2[v]));
      sensitivity_gradients_inv_mu(t.inv_r[k], t.inv_mu[v], a.sigma[v], g_v, t.cut[k], t.dcut[k],
                                   ds_dr_sh[k * SV + v], ds_dmu_sh[k * SV + v], ds_dsigma_sh[k * SV + v]);
    }
    __syncthreads();

    // grad_r of the tile's pairs (v in order) and this atom's grad_mu / grad_sigma partials (pairs in
    // order, double), as finish_tile sums them.
    for (int k = int(threadIdx.x); grad_r != nullptr && k < nk; k += int(blockDim.x)) {
      if (t.j[k] < 0) continue;
      T gr = T(0);
      for (int v = 0; v < S; ++v) {
        if (t.s[k][v] != T(0)) gr += red[k * SV + v] * ds_dr_sh[k * SV + v];
      }
      grad_r[p0 + k] = gr;
    }
    for (int v = int(threadIdx.x); v < S; v += int(blockDim.x)) {  // S <= 32 <= blockDim: one v per thread
      for (int k = 0; k < nk; ++k) {
        if (t.j[k] < 0 || t.s[k][v] == T(0)) continue;
        const double dS = double(red[k * SV + v]);
        gm += dS * double(ds_dmu_sh[k * SV + v]);
        gs += dS * double(ds_dsigma_sh[k * SV + v]);
      }
    }
  }
#undef FASTDIPOLE_LANES_LOAD_GRAD_ENV
  if (int(threadIdx.x) < S) {
    part_mu[int64_t(threadIdx.x) * N + i] = gm;
    part_sigma[int64_t(threadIdx.x) * N + i] = gs;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Backward pass 2 (featsum): grad_z[j, f] = sum of C[p, f] over the pairs p sent by j, in ascending p. One
// warp per (sender j, chunk of 32 * CT features); lane q stages the q-th pair of the group (after the same
// validity test as pass 1, -1 when it fails), then kPairBatch rows of C are in flight per lane.
// ---------------------------------------------------------------------------------------------------------
template <typename T, int CT>
__global__ void __launch_bounds__(kForwardWarps * kWarp)
    envsum_featsum_lanes_kernel(const EnvsumArgs<T> a, const int64_t* __restrict__ second_order,
                                const int64_t* __restrict__ second_offsets, const T* __restrict__ C,
                                int64_t n_chunks, T* __restrict__ grad_z) {
  __shared__ int64_t p_sh[kForwardWarps][kWarp];
  const int warp = int(threadIdx.x) / kWarp, lane = int(threadIdx.x) % kWarp;
  const int64_t task = int64_t(blockIdx.x) * kForwardWarps + warp;
  if (task >= a.n_atoms * n_chunks) return;  // the whole warp
  const int64_t F = a.n_features, P = a.n_pairs;
  const int64_t j = task / n_chunks;
  const int64_t f0 = (task - j * n_chunks) * (kWarp * CT) + lane;
  int64_t* ps = p_sh[warp];
  int64_t begin, end;
  detail::row_range(second_offsets, j, P, begin, end);
  T acc[CT];
#pragma unroll
  for (int c = 0; c < CT; ++c) acc[c] = T(0);
  for (int64_t q0 = begin; q0 < end; q0 += kWarp) {
    const int nq = int(min(int64_t(kWarp), end - q0));
    __syncwarp();
    int64_t mine = -1;
    if (lane < nq) {
      const int64_t p = second_order[q0 + lane];
      if (p >= 0 && p < P) {
        const int64_t i = a.pair_first[p];
        if (i >= 0 && i < a.n_atoms && a.pair_second[p] == j) {
          int64_t rb, re;
          detail::row_range(a.row_offsets, i, P, rb, re);
          if (p >= rb && p < re) mine = p;
        }
      }
    }
    ps[lane] = mine;
    __syncwarp();
    for (int k0 = 0; k0 < nq; k0 += kPairBatch) {  // staged entries past nq are -1
      T cv[kPairBatch][CT];
#pragma unroll
      for (int q = 0; q < kPairBatch; ++q) {
        const int64_t p = ps[k0 + q];
#pragma unroll
        for (int c = 0; c < CT; ++c) {
          const int64_t f = f0 + kWarp * c;
          cv[q][c] = (p >= 0 && f < F) ? C[p * F + f] : T(0);
        }
      }
#pragma unroll
      for (int q = 0; q < kPairBatch; ++q) {
        if (ps[k0 + q] < 0) continue;  // skipped, not added as 0 (as the CPU)
#pragma unroll
        for (int c = 0; c < CT; ++c) acc[c] += cv[q][c];
      }
    }
  }
#pragma unroll
  for (int c = 0; c < CT; ++c) {
    const int64_t f = f0 + kWarp * c;
    if (f < F) grad_z[j * F + f] = acc[c];
  }
}

}  // namespace fastdipole::cuda::lanes
