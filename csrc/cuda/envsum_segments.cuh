// Segment backward of the Gaussian envsum (opt-in: FASTDIPOLE_CUDA_ENVSUM_BACKWARD=segments), included by
// envsum.cu inside its anonymous namespace.
//
// A segment is a run of atoms [a, b) that no pair leaves: every pair with one atom inside has the other inside
// too (a molecule, or several). One block owns a segment and everything the backward writes for it: grad_z of
// its atoms, grad_r of its pairs, the grad_mu / grad_sigma partials of its atoms. So the featsum needs no
// (pairs x F) scratch, no grouping of the pairs by sender and no atomics: the block sums each sender's terms
// itself, in ascending pair order, and the result is bitwise reproducible.
//
// Finding segments without a host sync (the training step runs in a CUDA graph): every pair (i, j) crosses
// the boundaries min(i, j) + 1 ... max(i, j); D[min] += 1, D[max] -= 1 and an exclusive prefix sum give
// D[a] = the number of pairs crossing the boundary in front of atom a, so atom a starts a segment iff
// a == 0 or D[a] == 0. The kernel runs one block per atom; blocks of atoms that start no segment return.
//
// Per block, the segment's pairs come in chunks of kThreads (thread k owns pair k of the chunk: its
// sensitivities and their dS accumulators live in its registers). For each group of VEC features the thread reads
// grad_env[i, v, f..] for its active v (lanes of one row read the same addresses) and z[j, f..], adds to
// dS_v and forms its featsum term t_p = sum_v s_v grad_env[i, v, f..]; then the first pair of each sender in
// the chunk walks that sender's chain of pairs (ascending) through shared memory and adds their terms to
// grad_z[j, f..]. After the features, each thread turns its dS into grad_r and (pair x v) partials, which the
// first pair of each receiving row sums in pair order into the atom's partials (double).
//
// Float32 only. Made for batches of small molecules: a large segment (a 10,000-atom system) is the work of
// a single block, correct but slow.
//
// Malformed input (launchers.h): a pair counts only when both atoms are inside the block's segment, so no
// block writes outside its segment for well-formed rows; with malformed row offsets the segments and rows may
// disagree and give wrong numbers, never an out-of-bounds access.
#pragma once

namespace segments {

// Threads per block = pairs per chunk.
constexpr int kThreads = 128;

// Pair crossings: D[min(i, j)] += 1, D[max(i, j)] -= 1 for every pair with both atoms in range (two's
// complement: -1 is added as 2^64 - 1). Integer atomics, so the counts do not depend on scheduling.
__global__ void crossing_marks_kernel(const int64_t* __restrict__ first, const int64_t* __restrict__ second,
                                      int64_t n_pairs, int64_t n_atoms, unsigned long long* __restrict__ D) {
  const int64_t p = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (p >= n_pairs) return;
  const int64_t i = first[p], j = second[p];
  if (i < 0 || i >= n_atoms || j < 0 || j >= n_atoms || i == j) return;
  atomicAdd(D + (i < j ? i : j), 1ull);
  atomicAdd(D + (i < j ? j : i), ~0ull);
}

// Shared memory of one block (static: its size depends only on the template arguments).
template <typename T, int SV, int VEC>
struct Shared {
  int64_t sender[kThreads];  // j of pair k, -1 when the pair does not count
  int64_t recv[kThreads];    // i of pair k when i is inside the segment (also for pairs that do not count), else -1
  int next[kThreads];        // the next pair of the chunk with the same sender, -1 after the last
  T term[2][kThreads][VEC];  // featsum term of pair k for the current features (two buffers: one barrier per group)
  T dmu[kThreads][SV];       // per-pair products dS_v ds_v/dmu and dS_v ds_v/dsigma (0 where the term is dropped)
  T dsig[kThreads][SV];
  T inv_mu[SV];
  T nhs2[SV];
  int64_t segment_end;
};

// VEC consecutive values; VEC = 4 (float32, 16-byte aligned) is one 128-bit access (lanes::load4 / store4).
template <typename T, int VEC>
__device__ __forceinline__ void load_vec(const T* __restrict__ p, T (&out)[VEC]) {
  if constexpr (VEC == 4) {
    lanes::load4(p, out);
  } else {
#pragma unroll
    for (int q = 0; q < VEC; ++q) out[q] = p[q];
  }
}

template <typename T, int VEC>
__device__ __forceinline__ void store_vec(T* __restrict__ p, const T (&x)[VEC]) {
  if constexpr (VEC == 4) {
    lanes::store4(p, x[0], x[1], x[2], x[3]);
  } else {
#pragma unroll
    for (int q = 0; q < VEC; ++q) p[q] = x[q];
  }
}

// Block per atom a; the block of a segment's first atom does the segment. VEC = 4 needs float32, F % 4 == 0
// and 16-byte aligned grad_env, z and grad_z (the launcher checks); VEC = 1 otherwise. At least 3 blocks per
// SM (at most 168 registers; 2 for SV = 32): with no minimum, ptxas settled at 96-128 registers and spilled
// for some SV.
template <typename T, int SV, int VEC>
__global__ void __launch_bounds__(kThreads, SV > 24 ? 2 : 3)
    envsum_backward_segments_kernel(const EnvsumArgs<T> a, const T* __restrict__ grad_env,
                                    const int64_t* __restrict__ crossings, T* __restrict__ grad_z,
                                    T* __restrict__ grad_r, double* __restrict__ part_mu,
                                    double* __restrict__ part_sigma) {
  constexpr int B = kThreads;
  __shared__ Shared<T, SV, VEC> sh;
  const int64_t a0 = blockIdx.x;
  if (a0 > 0 && crossings[a0] != 0) return;  // not the first atom of a segment (uniform over the block)
  const int64_t N = a.n_atoms, F = a.n_features;
  const int S = int(a.n_sens);
  const int k = int(threadIdx.x);
  if (k == 0) {
    int64_t b = a0 + 1;
    while (b < N && crossings[b] != 0) ++b;
    sh.segment_end = b;
  }
  if (k < S) {
    sh.inv_mu[k] = T(1) / a.mu[k];
    sh.nhs2[k] = neg_half_square(a.sigma[k]);
  }
  __syncthreads();
  const int64_t b0 = sh.segment_end, n_seg = b0 - a0;
  // this block's accumulators start at 0 (its threads add to them below, each element by one thread at a time)
  for (int64_t e = k; grad_z != nullptr && e < n_seg * F; e += B) grad_z[a0 * F + e] = T(0);
  for (int64_t e = k; e < n_seg * S; e += B) {
    const int64_t v = e / n_seg, i = a0 + (e - v * n_seg);
    part_mu[v * N + i] = 0.0;
    part_sigma[v * N + i] = 0.0;
  }
  int64_t p_lo, p_hi, unused;
  detail::row_range(a.row_offsets, a0, a.n_pairs, p_lo, unused);
  detail::row_range(a.row_offsets, b0 - 1, a.n_pairs, unused, p_hi);
  __syncthreads();  // zeros visible before any thread adds to them

  const T cutoff = T(a.cutoff);
  for (int64_t c0 = p_lo; c0 < p_hi; c0 += B) {
    const int nk = int(min(int64_t(B), p_hi - c0));
    // --- this thread's pair: indices, sensitivities -------------------------------------------------
    const int64_t p = c0 + k;
    int64_t i = -1, j = -1;
    T inv_r = T(0), cut = T(-1), dcut = T(0);
    if (k < nk) {
      const int64_t ii = a.pair_first[p], jj = a.pair_second[p];
      const T rp = a.r[p];
      if (ii >= a0 && ii < b0) {
        i = ii;
        if (jj >= a0 && jj < b0) {
          j = jj;
          if (!(rp > cutoff)) {  // r <= cutoff or NaN, as the CPU kernels
            inv_r = T(1) / rp;
            detail::cutoff_value_and_derivative(rp, cutoff, cut, dcut);
          }
        }
      }
    }
    T s[SV], dS[SV];
#pragma unroll
    for (int v = 0; v < SV; ++v) {
      s[v] = (v < S && cut != T(-1)) ? detail::active_sensitivity(inv_r, sh.inv_mu[v], sh.nhs2[v], cut) : T(0);
      dS[v] = T(0);
    }
    sh.sender[k] = j;
    sh.recv[k] = i;
    __syncthreads();
    // --- the chain of pairs with this pair's sender: the next one, and whether this is the first ------------
    bool first_of_sender = j >= 0;
    int next = -1;
    if (j >= 0) {
      for (int q = 0; q < nk; ++q) {
        if (sh.sender[q] != j) continue;
        if (q < k) first_of_sender = false;
        if (q > k && next < 0) next = q;
      }
    }
    sh.next[k] = next;
    __syncthreads();
    // --- features, VEC at a time: dS partial sums and featsum terms --------------------------------------
    for (int64_t f0 = 0; f0 < F; f0 += VEC) {
      T(*term)[VEC] = sh.term[(f0 / VEC) & 1];
      T t[VEC];
#pragma unroll
      for (int q = 0; q < VEC; ++q) t[q] = T(0);
      if (j >= 0) {
        T zv[VEC];
        load_vec<T, VEC>(a.z + j * F + f0, zv);
        const T* g_v = grad_env + i * int64_t(S) * F + f0;  // grad_env[i, v, f0], v = 0, 1, ...
#pragma unroll
        for (int v = 0; v < SV; ++v, g_v += F) {
          if (s[v] != T(0)) {  // dropped terms are skipped, not added as 0 (also v >= S: s = 0)
            T gv[VEC];
            load_vec<T, VEC>(g_v, gv);
#pragma unroll
            for (int q = 0; q < VEC; ++q) {
              t[q] += s[v] * gv[q];
              dS[v] += gv[q] * zv[q];
            }
          }
        }
      }
#pragma unroll
      for (int q = 0; q < VEC; ++q) term[k][q] = t[q];
      __syncthreads();
      if (first_of_sender && grad_z != nullptr) {  // the sender's terms of this chunk, in pair order
        T acc[VEC];
        load_vec<T, VEC>(grad_z + j * F + f0, acc);
        for (int q = k; q >= 0; q = sh.next[q]) {
#pragma unroll
          for (int u = 0; u < VEC; ++u) acc[u] += term[q][u];
        }
        store_vec<T, VEC>(grad_z + j * F + f0, acc);
      }
      // No barrier here: the next group writes the other buffer, and this one is rewritten only after the
      // next group's barrier, which every thread reaches after its walk above. (The last walks end before
      // the barrier below, ahead of any write to next or term.)
    }
    // --- grad_r of this pair (v in order) and its (pair x v) partial products ----------------------------
    T gr = T(0);
#pragma unroll
    for (int v = 0; v < SV; ++v) {
      T pm = T(0), ps = T(0);
      if (s[v] != T(0)) {
        const T g_v = exp(gaussian_exponent(inv_r, sh.inv_mu[v], sh.nhs2[v]));
        T ds_dr, ds_dmu, ds_dsigma;
        sensitivity_gradients_inv_mu(inv_r, sh.inv_mu[v], a.sigma[v], g_v, cut, dcut, ds_dr, ds_dmu, ds_dsigma);
        gr += dS[v] * ds_dr;
        pm = dS[v] * ds_dmu;
        ps = dS[v] * ds_dsigma;
      }
      if (v < S) {
        sh.dmu[k][v] = pm;
        sh.dsig[k][v] = ps;
      }
    }
    if (j >= 0 && grad_r != nullptr) grad_r[p] = gr;
    __syncthreads();
    // --- partials: the first pair of each receiving row in the chunk adds the row's products in order -----
    if (i >= 0 && (k == 0 || sh.recv[k - 1] != i)) {
      for (int v = 0; v < S; ++v) {
        double gm = part_mu[int64_t(v) * N + i], gs = part_sigma[int64_t(v) * N + i];
        for (int q = k; q < nk && sh.recv[q] == i; ++q) {
          gm += double(sh.dmu[q][v]);
          gs += double(sh.dsig[q][v]);
        }
        part_mu[int64_t(v) * N + i] = gm;
        part_sigma[int64_t(v) * N + i] = gs;
      }
    }
    __syncthreads();  // shared arrays are rewritten by the next chunk
  }
}

}  // namespace segments
