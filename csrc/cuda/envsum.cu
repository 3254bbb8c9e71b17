// Gaussian envsum forward/backward on the GPU (see launchers.h for the math and the index contract).
//
// Determinism: every output element is produced by one thread summing in a fixed order (rows and groups
// in index order, warp sums with a fixed xor tree, warps in index order); no kernel here uses atomics.
// Per-element math comes from common/hipnn_math.h (shared with the CPU kernels), with 1/mu and
// -0.5 sigma^2 hoisted exactly as the CPU kernels hoist them.
#include <algorithm>
#include <type_traits>

#include "cuda/device_utils.cuh"
#include "cuda/envsum_lanes.cuh"  // the lanes kernels (the default for n_sens <= 32)
#include "cuda/envsum_pairs.cuh"
#include "cuda/launchers.h"

namespace fastdipole::cuda {
namespace {

using detail::ceil_div;
using detail::kWarp;
using detail::read_pair;
using detail::round_up;

// Shared memory per block stays below the 48 KiB every architecture gives without an opt-in.
constexpr size_t kSharedBudget = 46 * 1024;
constexpr int kMaxPairTile = 32;
constexpr int kMaxThreads = 256;

inline size_t align8(size_t bytes) { return (bytes + 7) / 8 * 8; }

// ---------------------------------------------------------------------------------------------------------
// Forward. Block (i, y): receiving atom i; thread task t = y * blockDim + threadIdx owns feature f = t % F
// and sensitivities [g * VT, g * VT + VT) with g = t / F, accumulating them in registers. The
// sensitivities of a tile of pairs are computed once per block into shared memory.
// When it fits (zt_F = F), the senders' features z[j_k, :] of the tile are staged in shared memory too, by
// all threads at once, so the loop over pairs reads no global memory (zt_F = 0: read from global).
// Shared layout: j[tile] int64 | inv_mu[S] | nhs2[S] | inv_r[tile] | cut[tile] | s[tile][S] | zt[tile][zt_F]
// ---------------------------------------------------------------------------------------------------------
template <typename T>
struct ForwardShared {
  int64_t* j;
  T* inv_mu;
  T* nhs2;
  T* inv_r;
  T* cut;
  T* s;
  T* zt;
};

template <typename T>
size_t forward_shared_bytes(int64_t S, int tile, int64_t zt_F) {
  return sizeof(int64_t) * tile + sizeof(T) * size_t(2 * S + 2 * tile + int64_t(tile) * S + int64_t(tile) * zt_F);
}

template <typename T>
__device__ __forceinline__ ForwardShared<T> forward_shared(unsigned char* base, int64_t S, int tile) {
  ForwardShared<T> sh;
  sh.j = reinterpret_cast<int64_t*>(base);
  T* t = reinterpret_cast<T*>(base + sizeof(int64_t) * tile);
  sh.inv_mu = t;
  sh.nhs2 = t + S;
  sh.inv_r = t + 2 * S;
  sh.cut = t + 2 * S + tile;
  sh.s = t + 2 * S + 2 * tile;
  sh.zt = sh.s + int64_t(tile) * S;
  return sh;
}

// Stages pairs [p0, p0 + nk) of row i (read_pair), then every (pair, v) sensitivity (0 when dropped). Caller
// synchronises before and after.
template <typename T>
__device__ __forceinline__ void stage_pairs(const EnvsumArgs<T>& a, int64_t i, int64_t p0, int nk, int64_t* j_sh,
                                            T* inv_r_sh, T* cut_sh, T* dcut_sh, const T* inv_mu_sh,
                                            const T* nhs2_sh, T* s_sh) {
  for (int k = threadIdx.x; k < nk; k += blockDim.x) {
    int64_t j;
    T inv_r, c, dc;
    read_pair(a, i, p0 + k, j, inv_r, c, dc);
    j_sh[k] = j;
    inv_r_sh[k] = inv_r;
    cut_sh[k] = c;
    if (dcut_sh != nullptr) dcut_sh[k] = dc;
  }
  __syncthreads();
  const int64_t S = a.n_sens;
  for (int64_t idx = threadIdx.x; idx < int64_t(nk) * S; idx += blockDim.x) {
    const int64_t k = idx / S;
    const int64_t v = idx - k * S;
    const T c = cut_sh[k];
    s_sh[idx] = (c == T(-1)) ? T(0) : detail::active_sensitivity(inv_r_sh[k], inv_mu_sh[v], nhs2_sh[v], c);
  }
}

template <typename T>
__device__ __forceinline__ void hoist_parameters(const EnvsumArgs<T>& a, T* inv_mu_sh, T* nhs2_sh) {
  for (int64_t v = threadIdx.x; v < a.n_sens; v += blockDim.x) {
    inv_mu_sh[v] = T(1) / a.mu[v];
    nhs2_sh[v] = neg_half_square(a.sigma[v]);
  }
}

template <typename T, int VT>
__global__ void __launch_bounds__(kMaxThreads, 2)  // (kMaxThreads) alone: ptxas spilled (sm_90, double, VT 4)
    envsum_forward_kernel(const EnvsumArgs<T> a, int n_groups, int tile, bool stage_z, T* __restrict__ env) {
  extern __shared__ __align__(16) unsigned char shared_raw[];
  const int64_t S = a.n_sens, F = a.n_features;
  ForwardShared<T> sh = forward_shared<T>(shared_raw, S, tile);
  const int64_t i = blockIdx.x;
  const int64_t task = int64_t(blockIdx.y) * blockDim.x + threadIdx.x;
  const bool active = task < F * n_groups;
  const int64_t f = active ? task % F : 0;
  const int64_t v0 = active ? (task / F) * VT : 0;

  hoist_parameters(a, sh.inv_mu, sh.nhs2);
  int64_t begin, end;
  detail::row_range(a.row_offsets, i, a.n_pairs, begin, end);

  T acc[VT];
#pragma unroll
  for (int u = 0; u < VT; ++u) acc[u] = T(0);

  for (int64_t p0 = begin; p0 < end; p0 += tile) {
    const int nk = int(min(int64_t(tile), end - p0));
    __syncthreads();  // previous tile consumed (and parameters hoisted)
    stage_pairs(a, i, p0, nk, sh.j, sh.inv_r, sh.cut, static_cast<T*>(nullptr), sh.inv_mu, sh.nhs2, sh.s);
    if (stage_z) {  // j of the tile is visible here (stage_pairs synchronised after writing it)
      const int nz = nk * int(F);
      for (int e = threadIdx.x; e < nz; e += blockDim.x) {
        const int k = e / int(F);
        const int64_t j = sh.j[k];
        sh.zt[e] = (j >= 0) ? a.z[j * F + (e - k * int(F))] : T(0);
      }
    }
    __syncthreads();
    if (active) {
      for (int k = 0; k < nk; ++k) {
        const int64_t j = sh.j[k];
        if (j < 0) continue;
        const T zj = stage_z ? sh.zt[k * F + f] : a.z[j * F + f];
        const T* sk = sh.s + int64_t(k) * S + v0;
#pragma unroll
        for (int u = 0; u < VT; ++u) {
          if (v0 + u < S) {
            const T s = sk[u];
            acc[u] = (s != T(0)) ? acc[u] + s * zj : acc[u];  // dropped terms are skipped, not added as 0
          }
        }
      }
    }
  }
  if (active) {
#pragma unroll
    for (int u = 0; u < VT; ++u) {
      if (v0 + u < S) env[(i * S + v0 + u) * F + f] = acc[u];
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// Backward pass 1 where the lanes kernel does not run: block per receiving atom i (the tiled kernel below).
// Shared-memory prefix of its layout:
//   j[tile] int64 | gmu[S] gsig[S] double | inv_mu[S] nhs2[S] inv_r[tile] cut[tile] dcut[tile] | s[tile][S]  (T)
template <typename T>
struct BackwardRowShared {
  int64_t* j;
  double* gmu;
  double* gsig;
  T* inv_mu;
  T* nhs2;
  T* inv_r;
  T* cut;
  T* dcut;
  T* s;  // what follows s[tile][S] is each kernel's own
};

template <typename T>
__device__ __forceinline__ BackwardRowShared<T> backward_row_shared(unsigned char* base, int S, int tile) {
  BackwardRowShared<T> sh;
  sh.j = reinterpret_cast<int64_t*>(base);
  sh.gmu = reinterpret_cast<double*>(base + sizeof(int64_t) * tile);
  sh.gsig = sh.gmu + S;
  sh.inv_mu = reinterpret_cast<T*>(sh.gsig + S);
  sh.nhs2 = sh.inv_mu + S;
  sh.inv_r = sh.nhs2 + S;
  sh.cut = sh.inv_r + tile;
  sh.dcut = sh.cut + tile;
  sh.s = sh.dcut + tile;
  return sh;
}

// Start of the tiled backward's row: parameters hoisted, this atom's grad_mu / grad_sigma partials zeroed
// (thread v % blockDim owns entry v here and in finish_tile).
template <typename T>
__device__ __forceinline__ void start_row(const EnvsumArgs<T>& a, const BackwardRowShared<T>& sh) {
  hoist_parameters(a, sh.inv_mu, sh.nhs2);
  for (int v = threadIdx.x; v < int(a.n_sens); v += blockDim.x) {
    sh.gmu[v] = 0.0;
    sh.gsig[v] = 0.0;
  }
}

// End of a tile in the tiled backward (dS, dr, dmu, dsig: [tile][S], complete): grad_r of the tile's
// pairs, v in order as the CPU kernel (grad_r null when not wanted), and this atom's grad_mu / grad_sigma
// partials, pairs in order, in double (as the CPU kernel).
template <typename T>
__device__ __forceinline__ void finish_tile(const BackwardRowShared<T>& sh, int S, int nk, const T* dS, const T* dr,
                                            const T* dmu, const T* dsig, T* grad_r_tile) {
  for (int k = threadIdx.x; grad_r_tile != nullptr && k < nk; k += blockDim.x) {
    if (sh.j[k] < 0) continue;
    T gr = T(0);
    for (int v = 0; v < S; ++v) {
      if (sh.s[k * S + v] != T(0)) gr += dS[k * S + v] * dr[k * S + v];
    }
    grad_r_tile[k] = gr;
  }
  for (int v = threadIdx.x; v < S; v += blockDim.x) {
    double gm = sh.gmu[v], gs = sh.gsig[v];
    for (int k = 0; k < nk; ++k) {
      const int idx = k * S + v;
      if (sh.j[k] < 0 || sh.s[idx] == T(0)) continue;
      gm += double(dS[idx]) * double(dmu[idx]);
      gs += double(dS[idx]) * double(dsig[idx]);
    }
    sh.gmu[v] = gm;
    sh.gsig[v] = gs;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Backward pass 1, tiled (float64, n_sens > 32 or fewer than 16 features): no global-memory latency in its
// inner loops. Per tile of pairs and chunk of fc features, the block stages grad_env[i, :, chunk] and the senders'
// features z[j, chunk] in shared memory (coalesced loads by all threads at once), then
//   dS[k, v] += sum_f dE[v, f] z[j_k, f]   one thread per (pair, v), f in chunk order
//   C[p, f]   = sum_v s[k, v] dE[v, f]     one thread per (pair, f), v in order (the same bits as above)
// Rows of the staged tiles are padded to an odd length (fc | 1) so the threads of a warp hit distinct banks.
// Shared layout: j[tile] int64 | gmu[S] gsig[S] double | inv_mu[S] nhs2[S] inv_r[tile] cut[tile] dcut[tile]
//                | s, dS, dr, dmu, dsig [tile][S] | dE[S][fc | 1] | zt[tile][fc | 1]  (T)
// ---------------------------------------------------------------------------------------------------------
template <typename T>
constexpr size_t tiled_shared_bytes(int64_t S, int tile, int fc) {
  return sizeof(int64_t) * tile + sizeof(double) * size_t(2 * S) +
         sizeof(T) * size_t(2 * S + 3 * tile + int64_t(tile) * S * 5 + (S + tile) * int64_t(fc | 1));
}

template <typename T>
__global__ void __launch_bounds__(kMaxThreads, 4)  // <= 64 registers: with (kMaxThreads) alone ptxas spilled
    envsum_backward_tiled_kernel(const EnvsumArgs<T> a, const T* __restrict__ dE, int tile, int fc,
                                 T* __restrict__ C, T* __restrict__ grad_r, double* __restrict__ part_mu,
                                 double* __restrict__ part_sigma) {
  extern __shared__ __align__(16) unsigned char shared_raw[];
  const int S = int(a.n_sens);
  const int64_t F = a.n_features, N = a.n_atoms;
  const int TS = tile * S;
  const int ld = fc | 1;  // odd row length of the staged tiles: a warp's rows start in distinct banks

  const BackwardRowShared<T> sh = backward_row_shared<T>(shared_raw, S, tile);

  const int64_t i = blockIdx.x;
  start_row(a, sh);
  int64_t begin, end;
  detail::row_range(a.row_offsets, i, a.n_pairs, begin, end);

  for (int64_t p0 = begin; p0 < end; p0 += tile) {
    const int nk = int(min(int64_t(tile), end - p0));
    __syncthreads();
    stage_pairs(a, i, p0, nk, sh.j, sh.inv_r, sh.cut, sh.dcut, sh.inv_mu, sh.nhs2, sh.s);
    // The rest of the layout, derived here so fewer pointers stay live across stage_pairs (no spills).
    T* dS_sh = sh.s + TS;
    T* dr_sh = dS_sh + TS;
    T* dmu_sh = dr_sh + TS;
    T* dsig_sh = dmu_sh + TS;
    T* dE_sh = dsig_sh + TS;   // [S][ld]
    T* zt_sh = dE_sh + S * ld;  // [tile][ld]

    __syncthreads();  // stage_pairs done
    // Per (pair, v): the derivatives of s (they need no grad_env), and dS zeroed; thread idx owns both.
    for (int idx = threadIdx.x; idx < nk * S; idx += blockDim.x) {
      const int k = idx / S, v = idx - k * S;
      const T s = sh.s[idx];
      T ds_dr = T(0), ds_dmu = T(0), ds_dsigma = T(0);
      if (sh.j[k] >= 0 && s != T(0)) {
        const T g = exp(gaussian_exponent(sh.inv_r[k], sh.inv_mu[v], sh.nhs2[v]));
        sensitivity_gradients_inv_mu(sh.inv_r[k], sh.inv_mu[v], a.sigma[v], g, sh.cut[k], sh.dcut[k], ds_dr, ds_dmu,
                                     ds_dsigma);
      }
      dS_sh[idx] = T(0);
      dr_sh[idx] = ds_dr;
      dmu_sh[idx] = ds_dmu;
      dsig_sh[idx] = ds_dsigma;
    }
    for (int64_t f0 = 0; f0 < F; f0 += fc) {
      const int nf = int(min(int64_t(fc), F - f0));
      __syncthreads();  // pairs staged / previous chunk consumed
      for (int e = threadIdx.x; e < S * nf; e += blockDim.x) {
        const int v = e / nf, ff = e - v * nf;
        dE_sh[v * ld + ff] = dE[(i * S + v) * F + f0 + ff];
      }
      for (int e = threadIdx.x; e < nk * nf; e += blockDim.x) {
        const int k = e / nf, ff = e - k * nf;
        const int64_t j = sh.j[k];
        zt_sh[k * ld + ff] = (j >= 0) ? a.z[j * F + f0 + ff] : T(0);
      }
      __syncthreads();
      // sensesum partials of this chunk (active terms only; the others stay 0 and are never read)
      for (int idx = threadIdx.x; idx < nk * S; idx += blockDim.x) {
        const int k = idx / S, v = idx - k * S;
        if (sh.j[k] < 0 || sh.s[idx] == T(0)) continue;
        const T* dEv = dE_sh + v * ld;
        const T* zk = zt_sh + k * ld;
        T acc = T(0);
        for (int ff = 0; ff < nf; ++ff) acc += dEv[ff] * zk[ff];
        dS_sh[idx] += acc;
      }
      // featsum terms C[p, f] of this chunk (C is null when grad_z is not wanted)
      if (C != nullptr) {
        T* C_tile = C + p0 * F + f0;
        for (int e = threadIdx.x; e < nk * nf; e += blockDim.x) {
          const int k = e / nf, ff = e - k * nf;
          if (sh.j[k] < 0) continue;
          const T* sk = sh.s + k * S;
          const T* dEf = dE_sh + ff;
          T c = T(0);
#pragma unroll 1
          for (int v = 0; v < S; ++v) {
            const T s = sk[v];
            if (s != T(0)) c += s * dEf[v * ld];
          }
          C_tile[k * F + ff] = c;
        }
      }
    }
    __syncthreads();

    finish_tile(sh, S, nk, dS_sh, dr_sh, dmu_sh, dsig_sh, grad_r != nullptr ? grad_r + p0 : nullptr);
  }
  for (int v = threadIdx.x; v < S; v += blockDim.x) {
    part_mu[v * N + i] = sh.gmu[v];
    part_sigma[v * N + i] = sh.gsig[v];
  }
}

// Backward pass 3: out[v] = sum_i part[v * N + i] in a fixed tree (block (v, which), which 0: mu, 1: sigma).
constexpr int kReduceThreads = 256;

template <typename T>
__global__ void __launch_bounds__(kReduceThreads)
    reduce_partials_kernel(const double* __restrict__ part_mu, const double* __restrict__ part_sigma, int64_t N,
                           T* __restrict__ grad_mu, T* __restrict__ grad_sigma) {
  __shared__ double warp_sums[kReduceThreads / kWarp];
  const int64_t v = blockIdx.x;
  const double* part = (blockIdx.y == 0 ? part_mu : part_sigma) + v * N;
  double acc = 0.0;
  for (int64_t i = threadIdx.x; i < N; i += kReduceThreads) acc += part[i];
  acc = detail::warp_sum(acc);
  if ((threadIdx.x & (kWarp - 1)) == 0) warp_sums[threadIdx.x / kWarp] = acc;
  __syncthreads();
  T* out = blockIdx.y == 0 ? grad_mu : grad_sigma;  // null when that gradient is not wanted
  if (threadIdx.x == 0 && out != nullptr) {
    double total = 0.0;
    for (int w = 0; w < kReduceThreads / kWarp; ++w) total += warp_sums[w];
    out[v] = T(total);
  }
}

// Launch geometry of the forward.
template <typename T, int VT>
cudaError_t launch_forward(const EnvsumArgs<T>& a, T* env, cudaStream_t stream) {
  const int64_t S = a.n_sens, F = a.n_features;
  const int n_groups = int(ceil_div(S, VT));
  const int64_t n_tasks = F * n_groups;
  const int threads = int(std::min<int64_t>(kMaxThreads, round_up(n_tasks, kWarp)));
  const int64_t blocks_y = ceil_div(n_tasks, threads);
  if (blocks_y > detail::kMaxGridY || a.n_atoms > detail::kMaxGridX) return cudaErrorInvalidValue;
  // Stage the senders' features when a tile of at least 8 pairs still fits.
  auto plan_tile = [&](int64_t zt_F) -> int {
    const size_t fixed = forward_shared_bytes<T>(S, 0, zt_F);
    const size_t per_pair = forward_shared_bytes<T>(S, 1, zt_F) - fixed;
    if (fixed + per_pair > kSharedBudget) return 0;
    return int(std::min<size_t>(kMaxPairTile, (kSharedBudget - fixed) / per_pair));
  };
  int64_t zt_F = F;
  int tile = plan_tile(zt_F);
  if (tile < 8) {
    zt_F = 0;
    tile = plan_tile(0);
  }
  if (tile < 1) return cudaErrorInvalidValue;
  const size_t shared = forward_shared_bytes<T>(S, tile, zt_F);
  const dim3 grid(unsigned(a.n_atoms), unsigned(blocks_y));
  envsum_forward_kernel<T, VT><<<grid, threads, shared, stream>>>(a, n_groups, tile, zt_F > 0, env);
  return cudaGetLastError();
}

// Launch plan of the tiled backward: threads, pairs per tile, features per chunk. Each candidate chunk width
// (64, 32, ..., 1) gets the largest tile that fits; the plan with the most work between barriers
// (min(tile, 16) x chunk) wins. One pair and one feature always fit (asserted below), so there is a plan for
// every n_sens the launchers accept.
struct TiledPlan {
  int threads = 0, tile = 0, fc = 0;
};

template <typename T>
bool tiled_plan(const EnvsumArgs<T>& a, TiledPlan& plan) {
  const int64_t S = a.n_sens, F = a.n_features;
  TiledPlan best;
  int best_score = 0;
  for (int fc = int(std::min<int64_t>(F, 64)); fc >= 1; fc /= 2) {
    const size_t fixed = tiled_shared_bytes<T>(S, 0, fc);
    const size_t per_pair = tiled_shared_bytes<T>(S, 1, fc) - fixed;
    if (fixed + per_pair > kSharedBudget) continue;
    const int tile = int(std::min<size_t>(kMaxPairTile, (kSharedBudget - fixed) / per_pair));
    const int score = std::min(tile, 16) * fc;
    if (score > best_score) {
      best = TiledPlan{0, tile, fc};
      best_score = score;
    }
  }
  if (best.tile < 1) return false;
  best.threads = S * best.fc >= 1024 ? kMaxThreads : 128;
  plan = best;
  return true;
}
static_assert(tiled_shared_bytes<double>(kMaxSensitivities, 1, 1) <= kSharedBudget,
              "the tiled backward must fit one pair and one feature for every accepted n_sens");

template <int V>
using IntConstant = std::integral_constant<int, V>;

// Calls launch(SV, CT) with the plan's compile-time widths (kernel_plan.h: SV = lanes_slots, the register slots
// per lane for the sensitivities; CT = the 32-feature columns per lane). Only the widths a pass can have are
// instantiated: CT <= MAX_CT (forward 4, backward 2), and CT = 1 in float64. Other values: cudaErrorInvalidValue.
template <int MAX_CT, typename T, typename Launch>
cudaError_t with_lanes_widths(int slots, int columns, Launch&& launch) {
  auto with_ct = [&](auto sv) -> cudaError_t {
    if constexpr (sizeof(T) == 4 && MAX_CT >= 4) {
      if (columns == 4) return launch(sv, IntConstant<4>{});
    }
    if constexpr (sizeof(T) == 4 && MAX_CT >= 2) {
      if (columns == 2) return launch(sv, IntConstant<2>{});
    }
    if (columns == 1) return launch(sv, IntConstant<1>{});
    return cudaErrorInvalidValue;
  };
  switch (slots) {
    case 8:
      return with_ct(IntConstant<8>{});
    case 16:
      return with_ct(IntConstant<16>{});
    case 20:
      return with_ct(IntConstant<20>{});
    case 24:
      return with_ct(IntConstant<24>{});
    case 32:
      return with_ct(IntConstant<32>{});
    default:
      return cudaErrorInvalidValue;
  }
}

template <typename T, int SV, int CT>
cudaError_t launch_forward_lanes(const EnvsumArgs<T>& a, T* env, cudaStream_t stream) {
  const int64_t n_chunks = ceil_div(a.n_features, kWarp * CT);
  const int64_t blocks = ceil_div(a.n_atoms * n_chunks, lanes::kForwardWarps);
  if (blocks > detail::kMaxGridX) return cudaErrorInvalidValue;
  const unsigned threads = lanes::kForwardWarps * kWarp;
  lanes::envsum_forward_lanes_kernel<T, SV, CT><<<unsigned(blocks), threads, 0, stream>>>(a, n_chunks, env);
  return cudaGetLastError();
}

template <typename T, int SV, int CT>
cudaError_t launch_backward_lanes(const EnvsumArgs<T>& a, const T* grad_env, T* C, T* grad_r, double* part_mu,
                                  double* part_sigma, cudaStream_t stream) {
  const int64_t n_chunks = ceil_div(a.n_features, kWarp * CT);
  const int n_warps = int(std::min<int64_t>(n_chunks, lanes::kMaxBackwardWarps));
  const size_t shared = lanes::backward_shared_bytes<T, SV>(n_warps);
  if (shared > kSharedBudget) return cudaErrorInvalidValue;
  lanes::envsum_backward_lanes_kernel<T, SV, CT><<<unsigned(a.n_atoms), n_warps * kWarp, shared, stream>>>(
      a, grad_env, n_chunks, C, grad_r, part_mu, part_sigma);
  return cudaGetLastError();
}

// The lanes backward with the plan's widths; instantiated for float32 only (plan_envsum refuses it in float64).
template <typename T>
cudaError_t launch_backward_lanes_any(const EnvsumArgs<T>& a, const EnvsumPlan& plan, const T* grad_env, T* C,
                                      T* grad_r, double* part_mu, double* part_sigma, cudaStream_t stream) {
  if constexpr (sizeof(T) == 4) {
    auto launch = [&](auto sv, auto ct) {
      return launch_backward_lanes<T, decltype(sv)::value, decltype(ct)::value>(a, grad_env, C, grad_r, part_mu,
                                                                                 part_sigma, stream);
    };
    return with_lanes_widths<2, T>(plan.lanes_slots, plan.backward_columns, launch);
  } else {
    return cudaErrorInvalidValue;
  }
}

template <typename T, int CT>
cudaError_t launch_featsum_lanes(const EnvsumArgs<T>& a, const int64_t* second_order, const int64_t* second_offsets,
                                 const T* C, T* grad_z, cudaStream_t stream) {
  const int64_t n_chunks = ceil_div(a.n_features, kWarp * CT);
  const int64_t blocks = ceil_div(a.n_atoms * n_chunks, lanes::kForwardWarps);
  if (blocks > detail::kMaxGridX) return cudaErrorInvalidValue;
  lanes::envsum_featsum_lanes_kernel<T, CT><<<unsigned(blocks), lanes::kForwardWarps * kWarp, 0, stream>>>(
      a, second_order, second_offsets, C, n_chunks, grad_z);
  return cudaGetLastError();
}

// Scratch of the backward: C (the featsum terms), then the per-atom partials.
struct BackwardScratchLayout {
  size_t C = 0, part_mu = 0, part_sigma = 0, total = 0;
};

template <typename T>
BackwardScratchLayout backward_scratch_layout(const EnvsumArgs<T>& a) {
  BackwardScratchLayout l;
  const size_t front = align8(sizeof(T) * size_t(a.n_pairs) * size_t(a.n_features));
  const size_t part_bytes = sizeof(double) * size_t(a.n_sens) * size_t(a.n_atoms);
  l.part_mu = front;
  l.part_sigma = front + part_bytes;
  l.total = front + 2 * part_bytes;
  if (l.total == 0) l.total = 8;
  return l;
}

}  // namespace

template <typename T>
cudaError_t gaussian_envsum_forward(const EnvsumArgs<T>& a, const EnvsumPlan& plan, T* env, cudaStream_t stream) {
  if (a.n_atoms == 0 || a.n_sens == 0 || a.n_features == 0) return cudaSuccess;
  if (!plan_is_for(plan, envsum_shape(a))) return cudaErrorInvalidValue;
  if (plan.forward == EnvsumForwardKernel::kLanes) {
    auto launch = [&](auto sv, auto ct) {
      return launch_forward_lanes<T, decltype(sv)::value, decltype(ct)::value>(a, env, stream);
    };
    return with_lanes_widths<4, T>(plan.lanes_slots, plan.forward_columns, launch);
  }
  // Block kernel: register accumulators per thread for plan.block_group sensitivities.
  switch (plan.block_group) {
    case 32:
      return launch_forward<T, 32>(a, env, stream);
    case 16:
      return launch_forward<T, 16>(a, env, stream);
    case 8:
      return launch_forward<T, 8>(a, env, stream);
    case 4:
      return launch_forward<T, 4>(a, env, stream);
    default:
      return cudaErrorInvalidValue;
  }
}

template <typename T>
size_t gaussian_envsum_backward_scratch_bytes(const EnvsumArgs<T>& a) {
  return backward_scratch_layout(a).total;
}

template <typename T>
cudaError_t gaussian_envsum_backward(const EnvsumArgs<T>& a, const EnvsumPlan& plan, const T* grad_env,
                                     const int64_t* second_order, const int64_t* second_offsets, void* scratch,
                                     T* grad_z, T* grad_r, T* grad_mu, T* grad_sigma, cudaStream_t stream) {
  const int64_t N = a.n_atoms, S = a.n_sens, F = a.n_features, P = a.n_pairs;
  cudaError_t err = cudaSuccess;
  // Null outputs are not wanted: their work is skipped (featsum without grad_z, pass 3 without grad_mu and
  // grad_sigma).
  // grad_r stays 0 for pairs outside every row (malformed input); the kernels write everything else.
  if (grad_r != nullptr && P > 0 && (err = cudaMemsetAsync(grad_r, 0, sizeof(T) * size_t(P), stream)) != cudaSuccess)
    return err;
  if (N == 0 || S == 0 || F == 0) {  // nothing to sum: zero gradients
    if (grad_mu != nullptr && S > 0 &&
        (err = cudaMemsetAsync(grad_mu, 0, sizeof(T) * size_t(S), stream)) != cudaSuccess)
      return err;
    if (grad_sigma != nullptr && S > 0 &&
        (err = cudaMemsetAsync(grad_sigma, 0, sizeof(T) * size_t(S), stream)) != cudaSuccess)
      return err;
    if (grad_z != nullptr && N > 0 && F > 0 &&
        (err = cudaMemsetAsync(grad_z, 0, sizeof(T) * size_t(N * F), stream)) != cudaSuccess)
      return err;
    return cudaSuccess;
  }
  if (N > detail::kMaxGridX || !plan_is_for(plan, envsum_shape(a))) return cudaErrorInvalidValue;

  const BackwardScratchLayout layout = backward_scratch_layout(a);
  auto* base = static_cast<unsigned char*>(scratch);
  T* C = reinterpret_cast<T*>(base + layout.C);
  auto* part_mu = reinterpret_cast<double*>(base + layout.part_mu);
  auto* part_sigma = reinterpret_cast<double*>(base + layout.part_sigma);

  T* C_or_null = grad_z != nullptr ? C : nullptr;  // featsum terms only when grad_z is wanted
  TiledPlan tiled;
  if (plan.backward == EnvsumBackwardKernel::kLanes) {
    err = launch_backward_lanes_any<T>(a, plan, grad_env, C_or_null, grad_r, part_mu, part_sigma, stream);
  } else if (tiled_plan(a, tiled)) {
    const size_t shared = tiled_shared_bytes<T>(S, tiled.tile, tiled.fc);
    envsum_backward_tiled_kernel<T><<<unsigned(N), tiled.threads, shared, stream>>>(
        a, grad_env, tiled.tile, tiled.fc, C_or_null, grad_r, part_mu, part_sigma);
    err = cudaGetLastError();
  } else {
    return cudaErrorInvalidValue;  // unreachable for n_sens <= kMaxSensitivities (static_assert above)
  }
  if (err != cudaSuccess) return err;

  if (grad_z != nullptr) {
    // featsum: one warp per (sender, 32 x plan.featsum_columns features; 2 columns in float32 only)
    if constexpr (sizeof(T) == 4) {
      err = plan.featsum_columns == 2 ? launch_featsum_lanes<T, 2>(a, second_order, second_offsets, C, grad_z, stream)
                                      : launch_featsum_lanes<T, 1>(a, second_order, second_offsets, C, grad_z, stream);
    } else {
      err = launch_featsum_lanes<T, 1>(a, second_order, second_offsets, C, grad_z, stream);
    }
    if (err != cudaSuccess) return err;
  }

  if (grad_mu == nullptr && grad_sigma == nullptr) return cudaSuccess;
  reduce_partials_kernel<T><<<dim3(unsigned(S), 2), kReduceThreads, 0, stream>>>(part_mu, part_sigma, N, grad_mu,
                                                                                 grad_sigma);
  return cudaGetLastError();
}

template cudaError_t gaussian_envsum_forward<float>(const EnvsumArgs<float>&, const EnvsumPlan&, float*,
                                                    cudaStream_t);
template cudaError_t gaussian_envsum_forward<double>(const EnvsumArgs<double>&, const EnvsumPlan&, double*,
                                                     cudaStream_t);
template size_t gaussian_envsum_backward_scratch_bytes<float>(const EnvsumArgs<float>&);
template size_t gaussian_envsum_backward_scratch_bytes<double>(const EnvsumArgs<double>&);
template cudaError_t gaussian_envsum_backward<float>(const EnvsumArgs<float>&, const EnvsumPlan&, const float*,
                                                     const int64_t*, const int64_t*, void*, float*, float*, float*,
                                                     float*, cudaStream_t);
template cudaError_t gaussian_envsum_backward<double>(const EnvsumArgs<double>&, const EnvsumPlan&, const double*,
                                                      const int64_t*, const int64_t*, void*, double*, double*,
                                                      double*, double*, cudaStream_t);

}  // namespace fastdipole::cuda
