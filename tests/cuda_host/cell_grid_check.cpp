// Host-side check of the CUDA neighbour list's cell-list geometry, no GPU needed.
//
// Compiles csrc/cuda/cell_grid.h (the same plan_cell_grid / cell_coordinate / local_cell_index the GPU
// kernels call) with the host compiler and checks, on random and adversarial molecules, that
//   1. every pair accepted by the kernels' pair test (|R_j - R_i|^2 < cutoff^2 in the input precision,
//      rounded without FMA like squared_norm_rn) lies in the same or adjacent cells on every axis,
//   2. the grid stays linear in size (cells <= 8 n + 64),
//   3. the 27-cell search with a rank sort of each row (the GPU algorithm, emulated serially) gives
//      exactly the brute-force pair list, sorted by (i, j), non-finite atoms getting no pairs.
// Built with -ffp-contract=off (tests/test_cuda_compile.py). Prints "ok ..." and exits 0, or the first
// failure and exits 1.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "common/hipnn_math.h"
#include "cuda/cell_grid.h"

using fastdipole::is_pair;
using fastdipole::cuda::CellGrid;
using fastdipole::cuda::cell_coordinate;
using fastdipole::cuda::local_cell_index;
using fastdipole::cuda::plan_cell_grid;

namespace {

int failures = 0;

void fail(const std::string& what) {
  if (failures < 20) std::fprintf(stderr, "FAIL: %s\n", what.c_str());
  ++failures;
}

template <typename T>
bool finite3(const T* p) {
  return std::isfinite(p[0]) && std::isfinite(p[1]) && std::isfinite(p[2]);
}

// The GPU pipeline for one molecule, serially: bounding box of the finite atoms (bounding_box_kernel),
// grid plan (host), cell of each atom (assign_cells_kernel), then the 27-cell search + rank sort
// (cell_pairs_kernel). Returns the pairs as (i, j) sorted rows.
template <typename T>
std::vector<std::pair<int64_t, int64_t>> cell_list_pairs(const std::vector<T>& R, double cutoff, CellGrid& grid,
                                                         const std::string& label) {
  const int64_t n = int64_t(R.size() / 3);
  double lo[3] = {INFINITY, INFINITY, INFINITY}, hi[3] = {-INFINITY, -INFINITY, -INFINITY};
  int64_t n_finite = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (!finite3(&R[3 * i])) continue;
    ++n_finite;
    for (int d = 0; d < 3; ++d) {
      lo[d] = std::fmin(lo[d], double(R[3 * i + d]));
      hi[d] = std::fmax(hi[d], double(R[3 * i + d]));
    }
  }
  grid = CellGrid{};
  grid.atom_begin = 0;
  grid.atom_end = n;
  plan_cell_grid(grid, lo, hi, n_finite, cutoff);
  if (grid.n_cells() > 8 * n_finite + 64 && grid.n_cells() > 1) {
    fail(label + ": grid has " + std::to_string(grid.n_cells()) + " cells for " + std::to_string(n_finite) + " atoms");
  }
  std::vector<int64_t> cell(n, -1);
  std::vector<std::vector<int64_t>> members(grid.n_cells());
  std::vector<int32_t> coords(3 * n, 0);
  for (int64_t i = 0; i < n; ++i) {
    if (!finite3(&R[3 * i])) continue;
    int32_t c[3];
    for (int d = 0; d < 3; ++d) {
      c[d] = cell_coordinate(double(R[3 * i + d]), grid.origin[d], grid.inv_width, grid.dims[d]);
      if (c[d] < 0 || c[d] >= grid.dims[d]) fail(label + ": cell coordinate out of range");
      coords[3 * i + d] = c[d];
    }
    cell[i] = local_cell_index(c, grid.dims);
    members[cell[i]].push_back(i);
  }
  // Scramble cell contents: the GPU fills cells through atomics in no particular order.
  std::mt19937 rng(1234);
  for (auto& m : members) std::shuffle(m.begin(), m.end(), rng);

  const T cutoff_sq = T(cutoff * cutoff);
  std::vector<std::pair<int64_t, int64_t>> pairs;
  for (int64_t i = 0; i < n; ++i) {
    if (cell[i] < 0) continue;
    std::vector<int64_t> row;
    const int32_t cx = coords[3 * i], cy = coords[3 * i + 1], cz = coords[3 * i + 2];
    for (int32_t z = std::max(cz - 1, 0); z <= std::min(cz + 1, grid.dims[2] - 1); ++z) {
      for (int32_t y = std::max(cy - 1, 0); y <= std::min(cy + 1, grid.dims[1] - 1); ++y) {
        for (int32_t x = std::max(cx - 1, 0); x <= std::min(cx + 1, grid.dims[0] - 1); ++x) {
          const int32_t c[3] = {x, y, z};
          for (int64_t j : members[local_cell_index(c, grid.dims)]) {
            if (j != i && is_pair(R[3 * j] - R[3 * i], R[3 * j + 1] - R[3 * i + 1], R[3 * j + 2] - R[3 * i + 2],
                                  cutoff_sq)) {
              row.push_back(j);
            }
          }
        }
      }
    }
    // Rank sort, as the fill kernel: each j goes to the number of row entries smaller than it.
    std::vector<int64_t> sorted(row.size(), -1);
    for (size_t a = 0; a < row.size(); ++a) {
      size_t rank = 0;
      for (size_t b = 0; b < row.size(); ++b) rank += row[b] < row[a] ? 1 : 0;
      if (sorted[rank] != -1) fail(label + ": rank collision (duplicate neighbour)");
      sorted[rank] = row[a];
    }
    for (int64_t j : sorted) pairs.emplace_back(i, j);
  }
  return pairs;
}

template <typename T>
std::vector<std::pair<int64_t, int64_t>> brute_force_pairs(const std::vector<T>& R, double cutoff) {
  const int64_t n = int64_t(R.size() / 3);
  const T cutoff_sq = T(cutoff * cutoff);
  std::vector<std::pair<int64_t, int64_t>> pairs;
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      if (j != i && is_pair(R[3 * j] - R[3 * i], R[3 * j + 1] - R[3 * i + 1], R[3 * j + 2] - R[3 * i + 2], cutoff_sq)) {
        pairs.emplace_back(i, j);
      }
    }
  }
  return pairs;
}

template <typename T>
void check_molecule(const std::vector<T>& R, double cutoff, const std::string& label) {
  CellGrid grid;
  const auto got = cell_list_pairs(R, cutoff, grid, label);
  const auto want = brute_force_pairs(R, cutoff);
  if (got != want) {
    fail(label + ": cell list gives " + std::to_string(got.size()) + " pairs, brute force " +
         std::to_string(want.size()) + " (dims " + std::to_string(grid.dims[0]) + "x" + std::to_string(grid.dims[1]) +
         "x" + std::to_string(grid.dims[2]) + ")");
  }
}

template <typename T>
std::vector<T> random_box(std::mt19937_64& rng, int64_t n, double side, double offset) {
  std::uniform_real_distribution<double> u(0.0, side);
  std::vector<T> R(3 * n);
  for (auto& x : R) x = T(offset + u(rng));
  return R;
}

template <typename T>
void run_suite(const char* dtype) {
  std::mt19937_64 rng(42);
  const std::string tag = std::string(dtype) + " ";
  // Liquid-like density (0.1 / A^3) at the hippynn cutoff, several sizes and origins far from 0.
  for (int64_t n : {50, 300, 1500}) {
    const double side = std::cbrt(double(n) / 0.1);
    check_molecule(random_box<T>(rng, n, side, 0.0), 6.5, tag + "dense n=" + std::to_string(n));
    check_molecule(random_box<T>(rng, n, side, 1.0e4), 6.5, tag + "dense far n=" + std::to_string(n));
    check_molecule(random_box<T>(rng, n, side, -3.7e2), 3.0, tag + "dense cutoff 3 n=" + std::to_string(n));
  }
  // Sparse: far more volume than atoms (cells get wider, grid stays <= 8n + 64).
  check_molecule(random_box<T>(rng, 400, 5000.0, 0.0), 6.5, tag + "sparse");
  // Tiny cutoff: many cells requested, capped.
  check_molecule(random_box<T>(rng, 400, 30.0, 0.0), 1e-3, tag + "tiny cutoff");
  // Huge cutoff: one cell.
  check_molecule(random_box<T>(rng, 200, 30.0, 0.0), 1e6, tag + "huge cutoff");
  // Degenerate geometries: all atoms at one point, on a line, in a plane.
  {
    std::vector<T> R(3 * 100, T(1.25));
    check_molecule(R, 6.5, tag + "one point");
    for (int i = 0; i < 100; ++i) R[3 * i] = T(0.37 * i);
    check_molecule(R, 6.5, tag + "line");
    for (int i = 0; i < 100; ++i) R[3 * i + 1] = T(0.91 * (i % 10));
    check_molecule(R, 6.5, tag + "plane");
  }
  // Pairs exactly at and around the cutoff along each axis, straddling cell boundaries.
  {
    const double cutoff = 6.5;
    std::vector<T> R;
    for (int k = 0; k < 40; ++k) {
      for (int d = 0; d < 3; ++d) {
        const double base = 0.5 + 6.5 * k + 1e-3 * k;
        double a[3] = {0.0, 0.0, 0.0}, b[3] = {0.0, 0.0, 0.0};
        a[d] = base;
        b[d] = base + cutoff * (1.0 + (k % 5 - 2) * 1e-7);  // just inside, at, just outside
        a[(d + 1) % 3] = b[(d + 1) % 3] = 0.3 * k;
        for (int e = 0; e < 3; ++e) R.push_back(T(a[e]));
        for (int e = 0; e < 3; ++e) R.push_back(T(b[e]));
      }
    }
    check_molecule(R, cutoff, tag + "cutoff boundary");
  }
  // Non-finite atoms: no pairs, and they must not stretch the grid.
  {
    std::vector<T> R = random_box<T>(rng, 500, 17.0, 0.0);
    R[3 * 7] = std::numeric_limits<T>::quiet_NaN();
    R[3 * 11 + 1] = std::numeric_limits<T>::infinity();
    R[3 * 13 + 2] = -std::numeric_limits<T>::infinity();
    check_molecule(R, 6.5, tag + "non-finite atoms");
    std::vector<T> all_nan(3 * 10, std::numeric_limits<T>::quiet_NaN());
    check_molecule(all_nan, 6.5, tag + "all NaN");
  }
  // Random adversarial: points snapped to cell-width multiples of the planned grid.
  for (int trial = 0; trial < 20; ++trial) {
    const double cutoff = 0.5 + 9.5 * std::uniform_real_distribution<double>(0, 1)(rng);
    std::vector<T> R = random_box<T>(rng, 300, 4.0 * cutoff, 100.0 * trial);
    for (size_t k = 0; k < R.size(); k += 2) {
      const double w = cutoff * (1.0 + fastdipole::cuda::kCellWidthMargin);
      R[k] = T(100.0 * trial + w * std::round((double(R[k]) - 100.0 * trial) / w));
    }
    check_molecule(R, cutoff, tag + "snapped trial " + std::to_string(trial));
  }
}

}  // namespace

int main() {
  run_suite<float>("float32");
  run_suite<double>("float64");
  if (failures > 0) {
    std::fprintf(stderr, "%d failure(s)\n", failures);
    return 1;
  }
  std::printf("ok cell_grid_check: cell-list geometry matches brute force (float32, float64)\n");
  return 0;
}
