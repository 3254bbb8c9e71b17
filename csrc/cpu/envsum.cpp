// Gaussian envsum forward/backward on the CPU (see envsum.h for the math).
//
// Layout of the work:
//   * Feature rows are handled in zero-padded copies (Fp = F rounded up to kLanes), so every feature loop
//     runs over whole kLanes-wide chunks and vectorises without tails: z is copied once per call when
//     F is not a multiple of kLanes, the current row of env / grad_env lives in a local S x Fp block.
//   * Sensitivities (and in the backward their derivatives) are computed for batches of kPairBatch
//     consecutive pairs at once, one pair per vector lane, with the branch-free exp_poly/cos_sin_poly
//     (vecmath.h); batches run across row boundaries. Only the band [lo, hi) of Gaussians above the
//     floor enters the feature loops (about 8 of 20 for hippynn's QM9 settings); dropped Gaussians
//     inside the band carry s = 0 and derivatives 0.
//   * forward: tasks own whole rows (receiving atoms): a segmented reduction, no atomics.
//   * backward: one row pass computes sensesum (dS = grad_env[i] . z[j] for the band), grad_r, per-row
//     grad_mu/grad_sigma partials (summed over rows in order at the end) and, for featsum, the vector
//     t_p = sum_v s_v grad_env[i, v, :] that belongs to grad_z[j]. t_p is added to grad_z[j] directly
//     when the rows split into chunks whose target atoms do not overlap (molecules: pairs never leave
//     their molecule), one task per chunk. Otherwise (one big molecule and several threads) a column
//     pass over pairs grouped by j recomputes t_p and sums it. Either way grad_z[j] is the sum of the
//     same t_p vectors in ascending pair order: identical bits for any thread count and either path.
// Floating-point contraction is off for this file (CMakeLists.txt), so every ISA clone rounds alike.
#include "cpu/envsum.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "common/hipnn_math.h"
#include "cpu/vecmath.h"

#define FD_INLINE __attribute__((always_inline)) inline
// The per-Gaussian loops read and write distinct small arrays; after inlining GCC loses __restrict and
// would need more run-time alias checks than it allows, so it is told there is no dependence.
#if defined(__GNUC__) && !defined(__clang__)
#define FD_IVDEP _Pragma("GCC ivdep")
#else
#define FD_IVDEP
#endif

namespace fastdipole::cpu {
namespace {

// Elements per chunk of the feature and Gaussian loops: one AVX-512 register of floats, two of doubles.
constexpr int64_t kLanes = 16;
// Rows per forward task.
constexpr int64_t kRowGrain = 32;
// Pairs per backward task (chunks grow to the next clean boundary).
constexpr int64_t kPairsPerChunk = 2048;

// Gaussians are padded to a multiple of kSensLanes (20 -> 24: a 16-lane and an 8-lane vector).
constexpr int64_t kSensLanes = 8;

inline int64_t padded(int64_t n) { return (n + kLanes - 1) / kLanes * kLanes; }
inline int64_t padded_sens(int64_t n) { return (n + kSensLanes - 1) / kSensLanes * kSensLanes; }

// Everything the per-pair loops read. Per-Gaussian constants are padded to Sp = S rounded up to
// kSensLanes (the padding makes s = 0).
template <typename T>
struct Ctx {
  const T* z;  // (N, zstride): z itself or its padded copy
  int64_t zstride;
  const T* r;
  const int64_t* first;
  const int64_t* second;
  const int64_t* row_offsets;
  const T* inv_mu;     // 1 / mu            (padding: 0)
  const T* nhs2;       // -0.5 sigma^2      (padding: -1e30, so s = 0)
  const T* sigma;      // sigma             (padding: 0)
  const T* sigma_sq;   // sigma^2           (padding: 0)
  const T* inv_mu_sq;  // 1 / mu^2          (padding: 0)
  int64_t S, Sp, F, Fp;
  T cutoff;
};

// Gaussian exponents are clamped here before exp: any exponent below ln(kSensitivityFloor) = -23.03 gives
// s < 1e-10 (cut <= 1), which the floor drops, so no kept sensitivity changes. Without the clamp exp_poly's
// own clamp (-87 in float) lets exp(.) * cut fall into the denormal range, and x86 cores take a microcode
// assist of ~100 cycles per denormal operation: 28 % of the forward's time on QM9 batches (measured).
constexpr double kMinGaussianExponent = -30.0;
static_assert(kMinGaussianExponent < -23.03, "the clamp must only touch exponents the floor drops");

template <typename T>
FD_INLINE T clamped_exponent(T e) {
  return e < T(kMinGaussianExponent) ? T(kMinGaussianExponent) : e;  // NaN stays NaN
}

// Pairs whose per-Gaussian terms are computed together, a multiple of kLanes: the Gaussian loops run over
// pairs in whole vectors (one pair per lane, many independent exp chains), with arrays laid out
// [v * kPairBatch + k] and padding pairs that evaluate to s = 0.
constexpr int64_t kPairBatch = 32;

inline int64_t padded_pairs(int64_t n) { return (n + kLanes - 1) / kLanes * kLanes; }

// Per pair: 1/r, cos^2(pi r / (2 cutoff)) (cutoff_value in hipnn_math.h, with cos/sin from cos_sin_poly
// instead of libm calls) and its r-derivative; both 0 beyond the cutoff (the reference's mask), which
// makes every s and ds of that pair 0. NaN distances propagate. r holds np = padded_pairs(n) entries.
template <typename T>
FD_INLINE void pair_terms(const Ctx<T>& c, const T* __restrict r, int64_t np, T* __restrict inv_r,
                          T* __restrict cut, T* __restrict dcut) {
  const T cutoff = c.cutoff;
  const T a = pi_value<T>() / (T(2) * cutoff);
  for (int64_t kb = 0; kb < np; kb += kLanes) {
    for (int64_t kk = 0; kk < kLanes; ++kk) {
      const int64_t k = kb + kk;
      const T rk = r[k];
      const T angle = pi_value<T>() * rk / (T(2) * cutoff);
      T cs, sn;
      cos_sin_poly(angle, cs, sn);
      const bool outside = rk > cutoff;
      inv_r[k] = T(1) / rk;
      cut[k] = outside ? T(0) : cs * cs;
      dcut[k] = outside ? T(0) : -T(2) * a * cs * sn;
    }
  }
}

// Gathers the distances of n pairs (pair indices idx[k], or p0 + k when idx is null) into r, padded with
// pairs beyond the cutoff; returns the padded count.
template <typename T>
FD_INLINE int64_t gather_r(const Ctx<T>& c, int64_t p0, const int64_t* idx, int64_t n, T* r) {
  const int64_t np = padded_pairs(n);
  for (int64_t k = 0; k < n; ++k) r[k] = c.r[idx ? idx[k] : p0 + k];
  for (int64_t k = n; k < np; ++k) r[k] = T(2) * c.cutoff;
  return np;
}

// s[v * kPairBatch + k] for np pairs (0 where s <= floor: dropped as hippynn does; NaN kept), and
// bits[k]: bit v set when s_v of pair k is non-zero (tracked for S <= 64).
template <typename T>
FD_INLINE void sensitivity_cols(const Ctx<T>& c, const T* __restrict inv_r, const T* __restrict cut, int64_t np,
                                T* __restrict s, uint64_t* __restrict bits) {
  for (int64_t k = 0; k < np; ++k) bits[k] = 0;
  const uint64_t track = c.S <= 64 ? 1 : 0;
  for (int64_t v = 0; v < c.S; ++v) {
    const T im = c.inv_mu[v], nh = c.nhs2[v];
    T* __restrict sv = s + v * kPairBatch;
    for (int64_t kb = 0; kb < np; kb += kLanes) {
      for (int64_t kk = 0; kk < kLanes; ++kk) {
        const int64_t k = kb + kk;
        const T x = exp_poly(clamped_exponent(gaussian_exponent(inv_r[k], im, nh))) * cut[k];
        const T y = x <= T(kSensitivityFloor) ? T(0) : x;
        sv[k] = y;
        bits[k] |= ((y != T(0) ? uint64_t(1) : uint64_t(0)) & track) << (v & 63);
      }
    }
  }
}

// Sensitivities plus ds/dr, ds/dmu, ds/dsigma (all 0 for dropped Gaussians), same layout and bits.
template <typename T>
FD_INLINE void sensitivity_gradient_cols(const Ctx<T>& c, const T* __restrict inv_r, const T* __restrict cut,
                                         const T* __restrict dcut, int64_t np, T* __restrict s, T* __restrict ds_dr,
                                         T* __restrict ds_dmu, T* __restrict ds_dsigma, uint64_t* __restrict bits) {
  for (int64_t k = 0; k < np; ++k) bits[k] = 0;
  const uint64_t track = c.S <= 64 ? 1 : 0;
  for (int64_t v = 0; v < c.S; ++v) {
    const T im = c.inv_mu[v], nh = c.nhs2[v], sig = c.sigma[v], sig2 = c.sigma_sq[v], im2 = c.inv_mu_sq[v];
    const int64_t o = v * kPairBatch;
    for (int64_t kb = 0; kb < np; kb += kLanes) {
      for (int64_t kk = 0; kk < kLanes; ++kk) {
        const int64_t k = kb + kk;
        // Same formulas as sensitivity_gradients_inv_mu (hipnn_math.h), computed unconditionally and
        // then selected, so the loop vectorises.
        const T ir = inv_r[k], ck = cut[k];
        const T d = ir - im;
        const T g = exp_poly(clamped_exponent(nh * (d * d)));
        const T x = g * ck;
        const T gc = g * ck;
        const T a_r = g * (sig2 * d * (ir * ir) * ck + dcut[k]);
        const T a_mu = -gc * sig2 * d * im2;
        const T a_sigma = -gc * sig * d * d;
        const bool drop = x <= T(kSensitivityFloor);
        s[o + k] = drop ? T(0) : x;
        ds_dr[o + k] = drop ? T(0) : a_r;
        ds_dmu[o + k] = drop ? T(0) : a_mu;
        ds_dsigma[o + k] = drop ? T(0) : a_sigma;
        bits[k] |= ((drop ? uint64_t(0) : uint64_t(1)) & track) << (v & 63);
      }
    }
  }
}

// [lo, hi): the smallest range of v holding every non-zero s_v of a pair (lo == hi when none).
inline void band_of(uint64_t bits, int64_t S, int64_t& lo, int64_t& hi) {
  if (S > 64) {  // not tracked: every Gaussian (dropped ones are 0)
    lo = 0;
    hi = S;
  } else if (bits == 0) {
    lo = hi = 0;
  } else {
    lo = __builtin_ctzll(bits);
    hi = 64 - __builtin_clzll(bits);
  }
}

// y[0:n] += a x[0:n], n a multiple of kLanes.
template <typename T>
FD_INLINE void axpy_padded(T* __restrict y, T a, const T* __restrict x, int64_t n) {
  for (int64_t f = 0; f < n; f += kLanes) {
    for (int64_t k = 0; k < kLanes; ++k) y[f + k] += a * x[f + k];
  }
}

// y[0:n] += x[0:n], n a multiple of kLanes.
template <typename T>
FD_INLINE void add_padded(T* __restrict y, const T* __restrict x, int64_t n) {
  for (int64_t f = 0; f < n; f += kLanes) {
    for (int64_t k = 0; k < kLanes; ++k) y[f + k] += x[f + k];
  }
}

// t[0:Fp] = sum_{v in [lo, hi)} s_v rows[v][0:Fp], accumulated in v order. rows[v] = base + v * stride;
// s_v = s[v * kPairBatch] (one pair's column of the batch arrays).
// Fp a multiple of kLanes; `base` rows may be unpadded (stride F) as long as F == Fp or tail lanes are
// handled by the caller (see t_vector_unpadded).
template <typename T>
FD_INLINE void t_vector(const T* __restrict base, int64_t stride, const T* __restrict s, int64_t lo, int64_t hi,
                        int64_t Fp, T* __restrict t) {
  for (int64_t f = 0; f < Fp; f += kLanes) {
    T acc[kLanes] = {};
    for (int64_t v = lo; v < hi; ++v) {
      const T sv = s[v * kPairBatch];
      const T* row = base + v * stride + f;
      for (int64_t k = 0; k < kLanes; ++k) acc[k] += sv * row[k];
    }
    for (int64_t k = 0; k < kLanes; ++k) t[f + k] = acc[k];
  }
}

// The same sums as t_vector from unpadded rows (stride F, F < Fp): whole chunks first, then the tail
// lanes one by one with the same operation order, then zeros in the padding lanes.
template <typename T>
FD_INLINE void t_vector_unpadded(const T* __restrict base, int64_t F, const T* __restrict s, int64_t lo, int64_t hi,
                                 int64_t Fp, T* __restrict t) {
  const int64_t full = F / kLanes * kLanes;
  for (int64_t f = 0; f < full; f += kLanes) {
    T acc[kLanes] = {};
    for (int64_t v = lo; v < hi; ++v) {
      const T sv = s[v * kPairBatch];
      const T* row = base + v * F + f;
      for (int64_t k = 0; k < kLanes; ++k) acc[k] += sv * row[k];
    }
    for (int64_t k = 0; k < kLanes; ++k) t[f + k] = acc[k];
  }
  for (int64_t f = full; f < F; ++f) {
    T acc = T(0);
    for (int64_t v = lo; v < hi; ++v) acc += s[v * kPairBatch] * base[v * F + f];
    t[f] = acc;
  }
  for (int64_t f = F; f < Fp; ++f) t[f] = T(0);
}

// Fixed-order sum of kLanes partial sums.
template <typename T>
FD_INLINE T lane_sum(T* acc) {
  for (int64_t w = kLanes / 2; w > 0; w /= 2) {
    for (int64_t k = 0; k < w; ++k) acc[k] += acc[k + w];
  }
  return acc[0];
}

// Dot products of rows a, a + n, a + 2n, a + 3n with b (n a multiple of kLanes); same order as dot1.
template <typename T>
FD_INLINE void dot4_padded(const T* __restrict a, const T* __restrict b, int64_t n, T* out) {
  T c0[kLanes] = {}, c1[kLanes] = {}, c2[kLanes] = {}, c3[kLanes] = {};
  for (int64_t f = 0; f < n; f += kLanes) {
    for (int64_t k = 0; k < kLanes; ++k) {
      const T bk = b[f + k];
      c0[k] += a[f + k] * bk;
      c1[k] += a[n + f + k] * bk;
      c2[k] += a[2 * n + f + k] * bk;
      c3[k] += a[3 * n + f + k] * bk;
    }
  }
  out[0] = lane_sum(c0);
  out[1] = lane_sum(c1);
  out[2] = lane_sum(c2);
  out[3] = lane_sum(c3);
}

template <typename T>
FD_INLINE T dot1_padded(const T* __restrict a, const T* __restrict b, int64_t n) {
  T c0[kLanes] = {};
  for (int64_t f = 0; f < n; f += kLanes) {
    for (int64_t k = 0; k < kLanes; ++k) c0[k] += a[f + k] * b[f + k];
  }
  return lane_sum(c0);
}

// Per-task scratch.
template <typename T>
struct Scratch {
  std::vector<T> block;  // S x Fp: env (forward) / grad_env (backward) of the current row
  std::vector<T> t;      // Fp
  std::vector<T> r, inv_r, cut, dcut;          // kPairBatch
  std::vector<T> s, ds_dr, ds_dmu, ds_dsigma;  // S x kPairBatch
  std::vector<uint64_t> bits;                  // kPairBatch
  std::vector<T> dS;                           // max(S + 4, Sp)
  std::vector<T> blockT;                       // F x Sp: transposed block for F <= 8 (small-F sensesum)
  Scratch(int64_t S, int64_t Sp, int64_t F, int64_t Fp)
      : block(size_t(S * Fp), T(0)), t(size_t(Fp)), r(kPairBatch), inv_r(kPairBatch), cut(kPairBatch),
        dcut(kPairBatch), s(size_t(kPairBatch * S)), ds_dr(size_t(kPairBatch * S)), ds_dmu(size_t(kPairBatch * S)),
        ds_dsigma(size_t(kPairBatch * S)), bits(kPairBatch), dS(size_t(std::max(S + 4, Sp))),
        blockT(F <= 8 ? size_t(F * Sp) : 0, T(0)) {}
};

// ---- forward: env rows [i0, i1) ----
// Pairs are taken in batches of kPairBatch across row boundaries (QM9 rows hold ~17 pairs: batching
// per row would leave half of each 32-lane batch empty).
template <typename T>
FD_INLINE void forward_rows(const Ctx<T>& c, int64_t i0, int64_t i1, T* env, Scratch<T>& w) {
  const int64_t S = c.S, F = c.F, Fp = c.Fp;
  T* __restrict blk = w.block.data();
  auto finish_row = [&](int64_t i) {
    T* __restrict e = env + i * S * F;
    for (int64_t v = 0; v < S; ++v) {
      for (int64_t f = 0; f < F; ++f) e[v * F + f] = blk[v * Fp + f];
    }
    for (int64_t k = 0; k < S * Fp; ++k) blk[k] = T(0);
  };
  for (int64_t k = 0; k < S * Fp; ++k) blk[k] = T(0);
  int64_t i = i0;
  const int64_t P1 = c.row_offsets[i1];
  for (int64_t p0 = c.row_offsets[i0]; p0 < P1; p0 += kPairBatch) {
    const int64_t n = std::min(kPairBatch, P1 - p0);
    const int64_t np = gather_r(c, p0, nullptr, n, w.r.data());
    pair_terms(c, w.r.data(), np, w.inv_r.data(), w.cut.data(), w.dcut.data());
    sensitivity_cols(c, w.inv_r.data(), w.cut.data(), np, w.s.data(), w.bits.data());
    for (int64_t k = 0; k < n; ++k) {
      const int64_t p = p0 + k;
      while (p >= c.row_offsets[i + 1]) finish_row(i++);
      const T* s = w.s.data() + k;
      int64_t lo, hi;
      band_of(w.bits[k], S, lo, hi);
      const T* zj = c.z + c.second[p] * c.zstride;
      for (int64_t v = lo; v < hi; ++v) axpy_padded(blk + v * Fp, s[v * kPairBatch], zj, Fp);
    }
  }
  while (i < i1) finish_row(i++);
}

// ---- backward row pass: sensesum, grad_r, per-row grad_mu/grad_sigma partials, and (optionally)
// featsum contributions added into gz (N x Fp); pairs batched across rows as in the forward ----
template <typename T>
FD_INLINE void backward_rows(const Ctx<T>& c, const T* grad_env, int64_t i0, int64_t i1, T* grad_r, double* row_gmu,
                             T* gz, Scratch<T>& w) {
  const int64_t S = c.S, Sp = c.Sp, F = c.F, Fp = c.Fp;
  T* __restrict blk = w.block.data();
  T* __restrict blkT = w.blockT.data();
  T* __restrict t = w.t.data();
  T* __restrict dS = w.dS.data();
  const bool want_sense = grad_r != nullptr || row_gmu != nullptr;
  const bool small_f = F <= 8;
  int64_t i = -1;  // row whose grad_env is in blk
  double* gmu = nullptr;
  const int64_t P1 = c.row_offsets[i1];
  for (int64_t p0 = c.row_offsets[i0]; p0 < P1; p0 += kPairBatch) {
    const int64_t n = std::min(kPairBatch, P1 - p0);
    const int64_t np = gather_r(c, p0, nullptr, n, w.r.data());
    pair_terms(c, w.r.data(), np, w.inv_r.data(), w.cut.data(), w.dcut.data());
    if (want_sense) {
      sensitivity_gradient_cols(c, w.inv_r.data(), w.cut.data(), w.dcut.data(), np, w.s.data(), w.ds_dr.data(),
                                w.ds_dmu.data(), w.ds_dsigma.data(), w.bits.data());
    } else {
      sensitivity_cols(c, w.inv_r.data(), w.cut.data(), np, w.s.data(), w.bits.data());
    }
    for (int64_t k = 0; k < n; ++k) {
      const int64_t p = p0 + k;
      if (i < 0 || p >= c.row_offsets[i + 1]) {  // next row with pairs: its grad_env into the block
        if (i < 0) i = i0;
        while (p >= c.row_offsets[i + 1]) ++i;
        const T* __restrict dE = grad_env + i * S * F;
        for (int64_t v = 0; v < S; ++v) {
          for (int64_t f = 0; f < F; ++f) blk[v * Fp + f] = dE[v * F + f];  // padding lanes stay 0
        }
        if (small_f) {
          for (int64_t v = 0; v < S; ++v) {
            for (int64_t f = 0; f < F; ++f) blkT[f * Sp + v] = dE[v * F + f];  // padding lanes stay 0
          }
        }
        gmu = row_gmu ? row_gmu + i * 2 * S : nullptr;
      }
      const T* s = w.s.data() + k;
      int64_t lo, hi;
      band_of(w.bits[k], S, lo, hi);
      if (want_sense) {
        const T* ds_dr = w.ds_dr.data() + k;
        const T* ds_dmu = w.ds_dmu.data() + k;
        const T* ds_dsigma = w.ds_dsigma.data() + k;
        const T* zj = c.z + c.second[p] * c.zstride;
        int64_t v = lo;
        if (small_f) {
          // Few features: dS for every Gaussian at once, vectorised over v (no horizontal sums).
          for (int64_t u = 0; u < Sp; ++u) dS[u] = T(0);
          for (int64_t f = 0; f < F; ++f) {
            const T zf = zj[f];
            const T* __restrict col = blkT + f * Sp;
            for (int64_t u = 0; u < Sp; u += kSensLanes) {  // whole 8-lane chunks: no scalar epilogue
              for (int64_t q = 0; q < kSensLanes; ++q) dS[u + q] += zf * col[u + q];
            }
          }
        } else {
          for (; v + 4 <= hi; v += 4) dot4_padded(blk + v * Fp, zj, Fp, dS + v);
          for (; v < hi; ++v) dS[v] = dot1_padded(blk + v * Fp, zj, Fp);
        }
        T gr = T(0);
        for (v = lo; v < hi; ++v) gr += dS[v] * ds_dr[v * kPairBatch];
        if (grad_r) grad_r[p] = gr;
        if (gmu) {
          for (v = lo; v < hi; ++v) {
            gmu[v] += double(dS[v]) * double(ds_dmu[v * kPairBatch]);
            gmu[S + v] += double(dS[v]) * double(ds_dsigma[v * kPairBatch]);
          }
        }
      }
      if (gz != nullptr && lo < hi) {
        t_vector(blk, Fp, s, lo, hi, Fp, t);
        add_padded(gz + c.second[p] * Fp, t, Fp);
      }
    }
  }
}

// ---- backward column pass (featsum when rows cannot be split conflict-free): gz rows [j0, j1);
// pairs batched across columns ----
template <typename T>
FD_INLINE void featsum_cols(const Ctx<T>& c, const T* grad_env, const int64_t* col_offsets, const int64_t* col_pairs,
                            int64_t j0, int64_t j1, T* gz, Scratch<T>& w) {
  const int64_t S = c.S, F = c.F, Fp = c.Fp;
  T* __restrict t = w.t.data();
  int64_t j = j0;
  const int64_t Q1 = col_offsets[j1];
  for (int64_t q0 = col_offsets[j0]; q0 < Q1; q0 += kPairBatch) {
    const int64_t n = std::min(kPairBatch, Q1 - q0);
    const int64_t np = gather_r(c, 0, col_pairs + q0, n, w.r.data());
    pair_terms(c, w.r.data(), np, w.inv_r.data(), w.cut.data(), w.dcut.data());
    sensitivity_cols(c, w.inv_r.data(), w.cut.data(), np, w.s.data(), w.bits.data());
    for (int64_t k = 0; k < n; ++k) {
      const int64_t q = q0 + k;
      while (q >= col_offsets[j + 1]) ++j;
      const int64_t p = col_pairs[q];
      const T* s = w.s.data() + k;
      int64_t lo, hi;
      band_of(w.bits[k], S, lo, hi);
      if (lo == hi) continue;
      const T* dE = grad_env + c.first[p] * S * F;
      if (F == Fp) {
        t_vector(dE, F, s, lo, hi, Fp, t);
      } else {
        t_vector_unpadded(dE, F, s, lo, hi, Fp, t);
      }
      add_padded(gz + j * Fp, t, Fp);
    }
  }
}

// Multiversioned entry points (one ISA clone each, chosen at load time).
#define FD_DEFINE_ENTRY_POINTS(T, SUFFIX)                                                                        \
  FD_MULTIVERSION void forward_rows_##SUFFIX(const Ctx<T>& c, int64_t i0, int64_t i1, T* env, Scratch<T>& w) {  \
    forward_rows(c, i0, i1, env, w);                                                                           \
  }                                                                                                            \
  FD_MULTIVERSION void backward_rows_##SUFFIX(const Ctx<T>& c, const T* grad_env, int64_t i0, int64_t i1,      \
                                              T* grad_r, double* row_gmu, T* gz, Scratch<T>& w) {              \
    backward_rows(c, grad_env, i0, i1, grad_r, row_gmu, gz, w);                                                \
  }                                                                                                            \
  FD_MULTIVERSION void featsum_cols_##SUFFIX(const Ctx<T>& c, const T* grad_env, const int64_t* col_offsets,    \
                                             const int64_t* col_pairs, int64_t j0, int64_t j1, T* gz,          \
                                             Scratch<T>& w) {                                                  \
    featsum_cols(c, grad_env, col_offsets, col_pairs, j0, j1, gz, w);                                          \
  }                                                                                                            \
  inline void forward_rows_mv(const Ctx<T>& c, int64_t i0, int64_t i1, T* env, Scratch<T>& w) {               \
    forward_rows_##SUFFIX(c, i0, i1, env, w);                                                                  \
  }                                                                                                            \
  inline void backward_rows_mv(const Ctx<T>& c, const T* grad_env, int64_t i0, int64_t i1, T* grad_r,         \
                               double* row_gmu, T* gz, Scratch<T>& w) {                                        \
    backward_rows_##SUFFIX(c, grad_env, i0, i1, grad_r, row_gmu, gz, w);                                       \
  }                                                                                                            \
  inline void featsum_cols_mv(const Ctx<T>& c, const T* grad_env, const int64_t* col_offsets,                 \
                              const int64_t* col_pairs, int64_t j0, int64_t j1, T* gz, Scratch<T>& w) {        \
    featsum_cols_##SUFFIX(c, grad_env, col_offsets, col_pairs, j0, j1, gz, w);                                 \
  }

FD_DEFINE_ENTRY_POINTS(float, f32)
FD_DEFINE_ENTRY_POINTS(double, f64)
#undef FD_DEFINE_ENTRY_POINTS

// Per-call constants and the padded copy of z.
template <typename T>
struct Prepared {
  std::vector<T> inv_mu, nhs2, sigma, sigma_sq, inv_mu_sq;
  std::vector<T> z_padded;
  Ctx<T> ctx;
  explicit Prepared(const EnvsumProblem<T>& pr) {
    const int64_t S = pr.n_sens, Sp = padded_sens(std::max<int64_t>(S, 1)), F = pr.n_features, Fp = padded(F);
    inv_mu.assign(size_t(Sp), T(0));
    nhs2.assign(size_t(Sp), T(-1e30));
    sigma.assign(size_t(Sp), T(0));
    sigma_sq.assign(size_t(Sp), T(0));
    inv_mu_sq.assign(size_t(Sp), T(0));
    for (int64_t v = 0; v < S; ++v) {
      inv_mu[v] = T(1) / pr.mu[v];
      nhs2[v] = neg_half_square(pr.sigma[v]);
      sigma[v] = pr.sigma[v];
      sigma_sq[v] = pr.sigma[v] * pr.sigma[v];
      inv_mu_sq[v] = inv_mu[v] * inv_mu[v];
    }
    const T* z = pr.z;
    int64_t zstride = F;
    if (Fp != F) {
      z_padded.assign(size_t(pr.n_atoms * Fp), T(0));
      for (int64_t a = 0; a < pr.n_atoms; ++a) {
        std::memcpy(z_padded.data() + a * Fp, pr.z + a * F, sizeof(T) * size_t(F));
      }
      z = z_padded.data();
      zstride = Fp;
    }
    ctx = Ctx<T>{z,          zstride,       pr.r,           pr.pair_first,   pr.pair_second, pr.row_offsets,
                 inv_mu.data(), nhs2.data(), sigma.data(),   sigma_sq.data(), inv_mu_sq.data(), S,
                 Sp,         F,             Fp,             T(pr.cutoff)};
  }
};

// Row chunks for the fused backward: consecutive rows, cut only where no pair before the cut and no pair
// after it share a sending atom (prefix max of pair_second < suffix min), about kPairsPerChunk pairs
// each. Returns the chunk boundaries (first entry 0, last N) and the largest chunk's pair count.
std::vector<int64_t> clean_chunks(const int64_t* row_offsets, const int64_t* second, int64_t N, int64_t& largest) {
  std::vector<int64_t> suffix_min(size_t(N) + 1, std::numeric_limits<int64_t>::max());
  for (int64_t i = N - 1; i >= 0; --i) {
    int64_t m = suffix_min[i + 1];
    for (int64_t p = row_offsets[i]; p < row_offsets[i + 1]; ++p) m = std::min(m, second[p]);
    suffix_min[i] = m;
  }
  std::vector<int64_t> bounds{0};
  int64_t prefix_max = -1;
  largest = 0;
  for (int64_t i = 0; i < N; ++i) {
    for (int64_t p = row_offsets[i]; p < row_offsets[i + 1]; ++p) prefix_max = std::max(prefix_max, second[p]);
    const int64_t cut = i + 1;
    const bool clean = prefix_max < suffix_min[cut];
    if (cut == N || (clean && row_offsets[cut] - row_offsets[bounds.back()] >= kPairsPerChunk)) {
      largest = std::max(largest, row_offsets[cut] - row_offsets[bounds.back()]);
      bounds.push_back(cut);
    }
  }
  if (N == 0) bounds.push_back(0);
  return bounds;
}

}  // namespace

template <typename T>
void gaussian_envsum_forward(const EnvsumProblem<T>& problem, T* env, const ParallelFor& pfor) {
  const Prepared<T> prep(problem);
  const Ctx<T>& c = prep.ctx;
  pfor(0, problem.n_atoms, kRowGrain, [&](int64_t i0, int64_t i1) {
    Scratch<T> w(c.S, c.Sp, c.F, c.Fp);
    forward_rows_mv(c, i0, i1, env, w);
  });
}

template <typename T>
void gaussian_envsum_backward(const EnvsumProblem<T>& problem, const T* grad_env, T* grad_z, T* grad_r, T* grad_mu,
                              T* grad_sigma, const ParallelFor& pfor) {
  const Prepared<T> prep(problem);
  const Ctx<T>& c = prep.ctx;
  const int64_t N = problem.n_atoms, S = problem.n_sens, F = c.F, Fp = c.Fp, P = problem.n_pairs;
  const bool want_mu = grad_mu != nullptr || grad_sigma != nullptr;
  const bool want_sense = want_mu || grad_r != nullptr;
  if (!want_sense && grad_z == nullptr) return;

  // Per-row grad_mu / grad_sigma partial sums (double), reduced over rows in order at the end.
  std::vector<double> row_gmu(want_mu ? size_t(N * 2 * S) : 0, 0.0);
  // featsum accumulates into padded rows: grad_z itself when F is a multiple of kLanes.
  std::vector<T> gz_padded;
  T* gz = nullptr;
  if (grad_z != nullptr) {
    if (Fp == F) {
      std::fill(grad_z, grad_z + N * F, T(0));
      gz = grad_z;
    } else {
      gz_padded.assign(size_t(N * Fp), T(0));
      gz = gz_padded.data();
    }
  }

  int64_t largest = 0;
  const std::vector<int64_t> bounds =
      clean_chunks(problem.row_offsets, problem.pair_second, N, largest);
  // Fused featsum needs conflict-free chunks; with one dominant chunk (a large molecule), enough work
  // to share and more than one thread, the column pass keeps the threads busy instead (same bits).
  const bool fused = grad_z == nullptr || problem.threads == 1 || largest <= std::max<int64_t>(P / 4, 50000);
  const int64_t n_chunks = int64_t(bounds.size()) - 1;
  pfor(0, n_chunks, 1, [&](int64_t k0, int64_t k1) {
    Scratch<T> w(c.S, c.Sp, c.F, c.Fp);
    backward_rows_mv(c, grad_env, bounds[k0], bounds[k1], grad_r, want_mu ? row_gmu.data() : nullptr,
                     fused ? gz : nullptr, w);
  });

  if (grad_z != nullptr && !fused) {
    // Pairs grouped by sending atom, ascending pair index inside a group (stable counting sort).
    std::vector<int64_t> col_offsets(size_t(N) + 1, 0);
    std::vector<int64_t> col_pairs(static_cast<size_t>(P));
    for (int64_t p = 0; p < P; ++p) ++col_offsets[problem.pair_second[p] + 1];
    for (int64_t j = 0; j < N; ++j) col_offsets[j + 1] += col_offsets[j];
    {
      std::vector<int64_t> cursor(col_offsets.begin(), col_offsets.end() - 1);
      for (int64_t p = 0; p < P; ++p) col_pairs[cursor[problem.pair_second[p]]++] = p;
    }
    pfor(0, N, kRowGrain, [&](int64_t j0, int64_t j1) {
      Scratch<T> w(c.S, c.Sp, c.F, c.Fp);
      featsum_cols_mv(c, grad_env, col_offsets.data(), col_pairs.data(), j0, j1, gz, w);
    });
  }

  if (grad_z != nullptr && gz != grad_z) {
    for (int64_t j = 0; j < N; ++j) std::memcpy(grad_z + j * F, gz + j * Fp, sizeof(T) * size_t(F));
  }
  if (want_mu) {
    std::vector<double> total(size_t(2 * S), 0.0);
    for (int64_t i = 0; i < N; ++i) {
      for (int64_t v = 0; v < 2 * S; ++v) total[v] += row_gmu[i * 2 * S + v];
    }
    for (int64_t v = 0; v < S; ++v) {
      if (grad_mu) grad_mu[v] = T(total[v]);
      if (grad_sigma) grad_sigma[v] = T(total[S + v]);
    }
  }
}

template void gaussian_envsum_forward<float>(const EnvsumProblem<float>&, float*, const ParallelFor&);
template void gaussian_envsum_forward<double>(const EnvsumProblem<double>&, double*, const ParallelFor&);
template void gaussian_envsum_backward<float>(const EnvsumProblem<float>&, const float*, float*, float*, float*,
                                              float*, const ParallelFor&);
template void gaussian_envsum_backward<double>(const EnvsumProblem<double>&, const double*, double*, double*,
                                               double*, double*, const ParallelFor&);

}  // namespace fastdipole::cpu
