// Neighbour pairs: brute force for small molecules, cell list for large ones (see neighbors.h).
#include "cpu/neighbors.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "common/hipnn_math.h"

namespace fastdipole::cpu {
namespace {

// Cells are about cutoff / kCellsPerCutoff wide; neighbours are searched kCellsPerCutoff cells away.
// Half-cutoff cells test about 15.6 cutoff^3 of volume per atom instead of 27 cutoff^3 for full cells.
constexpr double kCellsPerCutoff = 2.0;
// Candidates tested per vectorised block (see hit_block).
constexpr int64_t kBlock = 16;

inline int ctz64(uint64_t x) { return __builtin_ctzll(x); }

// Cell list of one large molecule: atoms sorted by cell (x fastest), coordinates copied in that order.
template <typename T>
struct Grid {
  int64_t base = 0;                  // global index of the molecule's first atom
  int64_t n = 0;                     // atoms in the molecule
  int64_t dims[3] = {1, 1, 1};       // cells per direction
  int64_t reach[3] = {0, 0, 0};      // neighbouring cells searched per direction
  std::vector<int64_t> cell_start;   // n_cells + 1 offsets into the sorted arrays
  std::vector<uint32_t> local;       // sorted position -> local atom index
  std::vector<T> x, y, z;            // coordinates in sorted order

  int64_t n_cells() const { return dims[0] * dims[1] * dims[2]; }
};

template <typename T>
void build_grid(Grid<T>& g, const T* R, int64_t base, int64_t n, double cutoff) {
  g.base = base;
  g.n = n;
  const T* Rm = R + 3 * base;
  double lo[3] = {INFINITY, INFINITY, INFINITY};
  double hi[3] = {-INFINITY, -INFINITY, -INFINITY};
  std::vector<uint8_t> finite(n);
  int64_t n_finite = 0;
  for (int64_t a = 0; a < n; ++a) {
    const double p[3] = {double(Rm[3 * a]), double(Rm[3 * a + 1]), double(Rm[3 * a + 2])};
    finite[a] = std::isfinite(p[0]) && std::isfinite(p[1]) && std::isfinite(p[2]);
    if (!finite[a]) continue;
    ++n_finite;
    for (int d = 0; d < 3; ++d) {
      lo[d] = std::min(lo[d], p[d]);
      hi[d] = std::max(hi[d], p[d]);
    }
  }
  if (n_finite == 0) {
    g.cell_start.assign(2, 0);
    return;
  }

  // Cell widths at least cutoff / kCellsPerCutoff (plus a margin for rounding), grown when the molecule
  // is so sparse that there would be more cells than about 2 per atom (memory stays linear).
  const double max_cells = 2.0 * double(n_finite) + 8.0;
  double target = cutoff / kCellsPerCutoff * (1.0 + 1e-5);
  double extent[3], width[3];
  for (;;) {
    double total = 1.0;
    for (int d = 0; d < 3; ++d) {
      extent[d] = hi[d] - lo[d];
      const double cells = std::floor(extent[d] / target);
      g.dims[d] = int64_t(std::max(1.0, std::min(cells, 1e9)));
      total *= double(g.dims[d]);
    }
    if (total <= max_cells) break;
    target *= std::cbrt(total / max_cells) * 1.01;
  }
  double inv_width[3];
  for (int d = 0; d < 3; ++d) {
    width[d] = extent[d] / double(g.dims[d]);
    inv_width[d] = g.dims[d] > 1 ? 1.0 / width[d] : 0.0;
    // Two atoms closer than the cutoff are at most floor(cutoff / width) + 1 cells apart, even with the
    // rounding of the cell coordinates (the 1e-6 covers it).
    g.reach[d] = g.dims[d] > 1 ? std::min<int64_t>(g.dims[d] - 1, int64_t(cutoff * inv_width[d] * (1 + 1e-6)) + 1)
                               : 0;
  }

  // Counting sort of the atoms by cell (stable: atom order kept inside a cell).
  const int64_t n_cells = g.n_cells();
  std::vector<int64_t> cell_of(n, -1);
  g.cell_start.assign(n_cells + 1, 0);
  for (int64_t a = 0; a < n; ++a) {
    if (!finite[a]) continue;
    int64_t c[3];
    for (int d = 0; d < 3; ++d) {
      const double t = (double(Rm[3 * a + d]) - lo[d]) * inv_width[d];
      c[d] = std::min<int64_t>(g.dims[d] - 1, int64_t(t));
    }
    cell_of[a] = (c[2] * g.dims[1] + c[1]) * g.dims[0] + c[0];
    ++g.cell_start[cell_of[a] + 1];
  }
  for (int64_t c = 0; c < n_cells; ++c) g.cell_start[c + 1] += g.cell_start[c];
  std::vector<int64_t> cursor(g.cell_start.begin(), g.cell_start.end() - 1);
  g.local.resize(n_finite);
  // kBlock padding entries far from every atom (their squared distance overflows to inf: never a pair).
  const T far = T(1e30);
  g.x.assign(n_finite + kBlock, far);
  g.y.assign(n_finite + kBlock, far);
  g.z.assign(n_finite + kBlock, far);
  for (int64_t a = 0; a < n; ++a) {
    if (cell_of[a] < 0) continue;
    const int64_t s = cursor[cell_of[a]]++;
    g.local[s] = uint32_t(a);
    g.x[s] = Rm[3 * a];
    g.y[s] = Rm[3 * a + 1];
    g.z[s] = Rm[3 * a + 2];
  }
}

// Calls visit(begin, end) for every run of sorted positions that may hold neighbours of cell c:
// for each (y, z) neighbour row the cells [cx - reach, cx + reach] are consecutive in the sorted order.
template <typename T, typename Visit>
inline void for_neighbor_runs(const Grid<T>& g, int64_t c, Visit&& visit) {
  const int64_t cx = c % g.dims[0];
  const int64_t cy = (c / g.dims[0]) % g.dims[1];
  const int64_t cz = c / (g.dims[0] * g.dims[1]);
  const int64_t x0 = std::max<int64_t>(0, cx - g.reach[0]);
  const int64_t x1 = std::min<int64_t>(g.dims[0] - 1, cx + g.reach[0]);
  const int64_t z0 = std::max<int64_t>(0, cz - g.reach[2]);
  const int64_t z1 = std::min<int64_t>(g.dims[2] - 1, cz + g.reach[2]);
  const int64_t y0 = std::max<int64_t>(0, cy - g.reach[1]);
  const int64_t y1 = std::min<int64_t>(g.dims[1] - 1, cy + g.reach[1]);
  for (int64_t zz = z0; zz <= z1; ++zz) {
    for (int64_t yy = y0; yy <= y1; ++yy) {
      const int64_t row = (zz * g.dims[1] + yy) * g.dims[0];
      visit(g.cell_start[row + x0], g.cell_start[row + x1 + 1]);
    }
  }
}

// Bit k of the result is set when sorted position b + k (k < kBlock) is within the cutoff of
// (xa, ya, za). A fixed block length lets the compiler vectorise the test completely (no scalar
// epilogue); the coordinate arrays carry kBlock far-away padding entries so a block may run past a run's
// end, and callers mask the bits beyond it.

template <typename T>
__attribute__((always_inline)) inline uint32_t hit_block(const T* __restrict x, const T* __restrict y,
                                                         const T* __restrict z, int64_t b, T xa, T ya, T za,
                                                         T cutoff_sq) {
  alignas(16) uint8_t hit[kBlock];
  for (int64_t k = 0; k < kBlock; ++k) {
    hit[k] = is_pair(x[b + k] - xa, y[b + k] - ya, z[b + k] - za, cutoff_sq) ? 1 : 0;
  }
  uint64_t lo, hi;
  std::memcpy(&lo, hit, 8);
  std::memcpy(&hi, hit + 8, 8);
  // Byte k's low bit -> bit k of the byte (little endian): the classic multiply-gather.
  return uint32_t((lo * 0x0102040810204080ULL) >> 56) | (uint32_t((hi * 0x0102040810204080ULL) >> 56) << 8);
}

inline uint32_t block_mask(int64_t b, int64_t b1) {
  const int64_t m = b1 - b;
  return m >= kBlock ? 0xFFFFu : ((1u << m) - 1u);
}

// Both passes visit the atoms cell by cell (tasks are runs of cells): the neighbour cells they read stay
// in cache. (Visiting atoms in input order instead, to write the outputs sequentially, was 1.5x slower.)
template <typename T>
__attribute__((always_inline)) inline void grid_count_cells(const Grid<T>& g, int64_t c0, int64_t c1,
                                                            T cutoff_sq, int64_t* row_counts) {
  const T* x = g.x.data();
  const T* y = g.y.data();
  const T* z = g.z.data();
  for (int64_t c = c0; c < c1; ++c) {
    for (int64_t a = g.cell_start[c]; a < g.cell_start[c + 1]; ++a) {
      int64_t count = 0;
      const T xa = x[a], ya = y[a], za = z[a];
      for_neighbor_runs(g, c, [&](int64_t b0, int64_t b1) {
        for (int64_t b = b0; b < b1; b += kBlock) {
          count += __builtin_popcount(hit_block(x, y, z, b, xa, ya, za, cutoff_sq) & block_mask(b, b1));
        }
      });
      row_counts[g.base + g.local[a]] = count - 1;  // minus the atom itself (distance 0)
    }
  }
}

// Sorts a few hundred atom indices: one counting pass into about 2n buckets by value range, then an
// insertion sort of the nearly sorted result. With most buckets holding 0 or 1 element the insertion
// sort rarely moves anything, so its branches are predictable (std::sort's are not: ~2.5x slower here).
constexpr int64_t kMaxBuckets = 1024;

inline void sort_indices(uint32_t* a, int64_t n, std::vector<uint32_t>& tmp) {
  auto insertion = [](uint32_t* v, int64_t len) {
    for (int64_t i = 1; i < len; ++i) {
      const uint32_t key = v[i];
      int64_t j = i - 1;
      while (j >= 0 && v[j] > key) {
        v[j + 1] = v[j];
        --j;
      }
      v[j + 1] = key;
    }
  };
  if (n < 24) {
    insertion(a, n);
    return;
  }
  uint32_t lo = a[0], hi = a[0];
  for (int64_t i = 1; i < n; ++i) {
    lo = std::min(lo, a[i]);
    hi = std::max(hi, a[i]);
  }
  int shift = 0;
  const uint64_t span = uint64_t(hi - lo) + 1;
  const uint64_t target_buckets = uint64_t(std::min<int64_t>(kMaxBuckets, 2 * n));
  while ((span >> shift) > target_buckets) ++shift;
  const int64_t n_buckets = int64_t((span - 1) >> shift) + 1;
  uint32_t counts[kMaxBuckets + 2];
  std::fill(counts, counts + n_buckets + 1, 0u);
  for (int64_t i = 0; i < n; ++i) ++counts[((a[i] - lo) >> shift) + 1];
  for (int64_t b = 0; b < n_buckets; ++b) counts[b + 1] += counts[b];
  if (int64_t(tmp.size()) < n) tmp.resize(size_t(n));
  for (int64_t i = 0; i < n; ++i) tmp[counts[(a[i] - lo) >> shift]++] = a[i];
  insertion(tmp.data(), n);
  std::memcpy(a, tmp.data(), sizeof(uint32_t) * size_t(n));
}

template <typename T>
__attribute__((always_inline)) inline void grid_fill_cells(const Grid<T>& g, int64_t c0, int64_t c1, T cutoff_sq,
                                                           const int64_t* row_offsets, int64_t* first,
                                                           int64_t* second, std::vector<uint32_t>& found,
                                                           std::vector<uint32_t>& tmp) {
  const T* x = g.x.data();
  const T* y = g.y.data();
  const T* z = g.z.data();
  const uint32_t* local = g.local.data();
  for (int64_t a = g.cell_start[c0]; a < g.cell_start[c1]; ++a) {
    while (a >= g.cell_start[c0 + 1]) ++c0;  // the cell of sorted position a
    const int64_t c = c0;
    const int64_t i = g.base + local[a];
    const int64_t begin = row_offsets[i], n_found = row_offsets[i + 1] - begin;
    if (int64_t(found.size()) < n_found) found.resize(size_t(n_found));
    uint32_t* out = found.data();
    int64_t k = 0;
    const T xa = x[a], ya = y[a], za = z[a];
    for_neighbor_runs(g, c, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; b += kBlock) {
        uint32_t bits = hit_block(x, y, z, b, xa, ya, za, cutoff_sq) & block_mask(b, b1);
        if (a >= b && a < b + kBlock) bits &= ~(1u << (a - b));  // not the atom itself
        while (bits) {
          if (k < n_found) out[k] = local[b + __builtin_ctz(bits)];
          ++k;
          bits &= bits - 1;
        }
      }
    });
    if (k != n_found) throw std::logic_error("fastdipole neighbor_pairs: count and fill passes disagree");
    // Runs from different cells interleave in atom order: sort to get the reference's j order.
    sort_indices(out, k, tmp);
    for (int64_t t = 0; t < k; ++t) {
      first[begin + t] = i;
      second[begin + t] = g.base + int64_t(out[t]);
    }
  }
}


// Brute force over one small molecule, its coordinates copied to padded structure-of-arrays buffers so the
// pair tests run through hit_block. Each row's hits are kept as bits for the fill pass. Testing (i, j) and
// (j, i) separately costs nothing extra (16-wide blocks) and gives the same bits: R_j - R_i = -(R_i - R_j).
template <typename T>
__attribute__((always_inline)) inline void small_count(const T* R, int64_t base, int64_t n, T cutoff_sq,
                                                       uint64_t* mask, int64_t* row_counts) {
  constexpr int64_t kCap = kBruteForceMaxAtoms + kBlock;
  alignas(64) T x[kCap], y[kCap], z[kCap];
  const T* Rm = R + 3 * base;
  for (int64_t a = 0; a < n; ++a) {
    x[a] = Rm[3 * a];
    y[a] = Rm[3 * a + 1];
    z[a] = Rm[3 * a + 2];
  }
  for (int64_t a = n; a < n + kBlock; ++a) x[a] = y[a] = z[a] = T(1e30);  // padding: never a pair
  const int64_t words = (n + 63) / 64;
  for (int64_t i = 0; i < n; ++i) {
    const T xi = x[i], yi = y[i], zi = z[i];
    uint64_t* row = mask + i * words;
    int64_t count = 0;
    for (int64_t b = 0; b < n; b += kBlock) {
      uint32_t bits = hit_block(x, y, z, b, xi, yi, zi, cutoff_sq) & block_mask(b, n);
      if (i >= b && i < b + kBlock) bits &= ~(1u << (i - b));  // not the atom itself
      row[b >> 6] |= uint64_t(bits) << (b & 63);
      count += __builtin_popcount(bits);
    }
    row_counts[base + i] = count;
  }
}

void small_fill(int64_t base, int64_t n, const uint64_t* mask, const int64_t* row_offsets, int64_t* first,
                int64_t* second) {
  const int64_t words = (n + 63) / 64;
  for (int64_t i = 0; i < n; ++i) {
    int64_t p = row_offsets[base + i];
    for (int64_t w = 0; w < words; ++w) {
      uint64_t bits = mask[i * words + w];
      while (bits) {
        first[p] = base + i;
        second[p] = base + w * 64 + ctz64(bits);
        ++p;
        bits &= bits - 1;
      }
    }
  }
}

// Multiversioned entry points (one ISA clone each, chosen at load time).
#define FD_GRID_ENTRY_POINTS(T, SUFFIX)                                                                        \
  FD_MULTIVERSION void small_count_range_##SUFFIX(const T* R, const int64_t* offsets, const int64_t* mols,      \
                                                  const int64_t* mask_offset, int64_t k0, int64_t k1,          \
                                                  T cutoff_sq, uint64_t* masks, int64_t* row_counts) {         \
    for (int64_t k = k0; k < k1; ++k) {                                                                        \
      const int64_t m = mols[k];                                                                               \
      small_count(R, offsets[m], offsets[m + 1] - offsets[m], cutoff_sq, masks + mask_offset[k], row_counts);  \
    }                                                                                                          \
  }                                                                                                            \
  inline void small_count_range(const T* R, const int64_t* offsets, const int64_t* mols,                       \
                                const int64_t* mask_offset, int64_t k0, int64_t k1, T cutoff_sq,               \
                                uint64_t* masks, int64_t* row_counts) {                                        \
    small_count_range_##SUFFIX(R, offsets, mols, mask_offset, k0, k1, cutoff_sq, masks, row_counts);           \
  }                                                                                                            \
  FD_MULTIVERSION void grid_count_cells_##SUFFIX(const Grid<T>& g, int64_t c0, int64_t c1, T cutoff_sq,        \
                                                 int64_t* row_counts) {                                        \
    grid_count_cells(g, c0, c1, cutoff_sq, row_counts);                                                        \
  }                                                                                                            \
  FD_MULTIVERSION void grid_fill_cells_##SUFFIX(const Grid<T>& g, int64_t c0, int64_t c1, T cutoff_sq,         \
                                                const int64_t* row_offsets, int64_t* first, int64_t* second) {  \
    std::vector<uint32_t> found, tmp;                                                                          \
    grid_fill_cells(g, c0, c1, cutoff_sq, row_offsets, first, second, found, tmp);                             \
  }                                                                                                            \
  inline void grid_count(const Grid<T>& g, int64_t c0, int64_t c1, T cutoff_sq, int64_t* row_counts) {         \
    grid_count_cells_##SUFFIX(g, c0, c1, cutoff_sq, row_counts);                                               \
  }                                                                                                            \
  inline void grid_fill(const Grid<T>& g, int64_t c0, int64_t c1, T cutoff_sq, const int64_t* row_offsets,      \
                        int64_t* first, int64_t* second) {                                                     \
    grid_fill_cells_##SUFFIX(g, c0, c1, cutoff_sq, row_offsets, first, second);                                \
  }

FD_GRID_ENTRY_POINTS(float, f32)
FD_GRID_ENTRY_POINTS(double, f64)
#undef FD_GRID_ENTRY_POINTS

}  // namespace

template <typename T>
struct NeighborListBuilder<T>::Impl {
  const T* R;
  int64_t n_atoms;
  const int64_t* offsets;
  int64_t n_molecules;
  double cutoff;
  T cutoff_sq;
  ParallelFor pfor;

  std::vector<int64_t> small;        // molecules handled by brute force
  std::vector<int64_t> mask_offset;  // per small molecule: first word of its bit matrix
  std::vector<uint64_t> masks;
  std::vector<Grid<T>> grids;        // one per large molecule
  const int64_t* row_offsets = nullptr;
};

template <typename T>
NeighborListBuilder<T>::NeighborListBuilder(const T* R, int64_t n_atoms, const int64_t* offsets,
                                            int64_t n_molecules, double cutoff, ParallelFor pfor)
    : impl_(new Impl{R, n_atoms, offsets, n_molecules, cutoff, T(cutoff * cutoff), std::move(pfor), {}, {}, {}, {}}) {}

template <typename T>
NeighborListBuilder<T>::~NeighborListBuilder() = default;

template <typename T>
int64_t NeighborListBuilder<T>::count(int64_t* row_offsets) {
  Impl& s = *impl_;
  // row_offsets[i + 1] holds atom i's count until the prefix sum at the end.
  int64_t* row_counts = row_offsets + 1;
  row_offsets[0] = 0;
  std::vector<int64_t> large;
  int64_t words = 0;
  s.small.clear();
  s.mask_offset.clear();
  for (int64_t m = 0; m < s.n_molecules; ++m) {
    const int64_t n = s.offsets[m + 1] - s.offsets[m];
    if (n <= 0) continue;
    if (n <= kBruteForceMaxAtoms) {
      s.small.push_back(m);
      s.mask_offset.push_back(words);
      words += n * ((n + 63) / 64);
    } else {
      large.push_back(m);
    }
  }
  s.mask_offset.push_back(words);
  s.masks.assign(size_t(words), 0);

  const int64_t n_small = int64_t(s.small.size());
  s.pfor(0, n_small, 16, [&](int64_t k0, int64_t k1) {
    small_count_range(s.R, s.offsets, s.small.data(), s.mask_offset.data(), k0, k1, s.cutoff_sq, s.masks.data(),
                      row_counts);
  });

  s.grids.resize(large.size());
  for (size_t k = 0; k < large.size(); ++k) {
    Grid<T>& g = s.grids[k];
    const int64_t m = large[k];
    const int64_t base = s.offsets[m], n = s.offsets[m + 1] - base;
    build_grid(g, s.R, base, n, s.cutoff);
    std::fill(row_counts + base, row_counts + base + n, 0);  // atoms outside the grid (non-finite) have none
    const Grid<T>& cg = g;
    s.pfor(0, g.n_cells(), 64, [&](int64_t c0, int64_t c1) { grid_count(cg, c0, c1, s.cutoff_sq, row_counts); });
  }

  for (int64_t i = 0; i < s.n_atoms; ++i) row_offsets[i + 1] += row_offsets[i];
  s.row_offsets = row_offsets;
  return row_offsets[s.n_atoms];
}

template <typename T>
void NeighborListBuilder<T>::fill(int64_t* pair_first, int64_t* pair_second) {
  Impl& s = *impl_;
  if (s.row_offsets == nullptr) throw std::logic_error("fastdipole neighbor_pairs: fill() called before count()");
  const int64_t n_small = int64_t(s.small.size());
  s.pfor(0, n_small, 16, [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k) {
      const int64_t m = s.small[k];
      small_fill(s.offsets[m], s.offsets[m + 1] - s.offsets[m], s.masks.data() + s.mask_offset[k], s.row_offsets,
                 pair_first, pair_second);
    }
  });
  for (const Grid<T>& g : s.grids) {
    s.pfor(0, g.n_cells(), 64, [&](int64_t c0, int64_t c1) {
      grid_fill(g, c0, c1, s.cutoff_sq, s.row_offsets, pair_first, pair_second);
    });
  }
}

template class NeighborListBuilder<float>;
template class NeighborListBuilder<double>;

}  // namespace fastdipole::cpu
