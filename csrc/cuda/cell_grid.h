// Cell grid of one large molecule for the CUDA neighbour list (plain C++, also compiled on the host by
// tests/cuda_host/cell_grid_check.cpp, which checks the geometry below without a GPU).
//
// Cells are cubes at least `cutoff` wide (Angstrom), so two atoms closer than the cutoff are in the same or
// in adjacent cells (27 cells searched). The width carries a 1e-4 relative margin: the float32 pair test
// can accept a pair up to a few 1e-7 beyond the cutoff, and the double cell coordinates round by ~1e-16
// per cell; the margin covers both. Clamping a coordinate into [0, dims) only moves atoms closer in cell
// space, so it never separates a pair.
#pragma once

#include <cmath>
#include <cstdint>

#include "common/hipnn_math.h"  // FD_HD

namespace fastdipole::cuda {

struct CellGrid {
  int64_t atom_begin = 0;   // atoms [atom_begin, atom_end) of the molecule
  int64_t atom_end = 0;
  int64_t cell_begin = 0;   // global index of the molecule's cell 0
  int32_t dims[3] = {1, 1, 1};
  double origin[3] = {0.0, 0.0, 0.0};  // Angstrom: lower corner of the bounding box of the finite atoms
  double inv_width = 0.0;              // 1 / cell width (1/Angstrom); 0 puts every atom in cell 0

  int64_t n_cells() const { return int64_t(dims[0]) * dims[1] * dims[2]; }
};

constexpr double kCellWidthMargin = 1e-4;
constexpr double kMaxCellsPerAxis = 1048576.0;  // 2^20

// Cell coordinate along one axis; NaN and anything below the origin go to 0, beyond the grid to dims - 1.
FD_HD int32_t cell_coordinate(double x, double origin, double inv_width, int32_t dims) {
  const double t = (x - origin) * inv_width;
  if (!(t > 0.0)) return 0;
  if (t >= double(dims - 1)) return dims - 1;
  return int32_t(t);
}

// Cell index inside the molecule's grid (x fastest).
FD_HD int64_t local_cell_index(const int32_t c[3], const int32_t dims[3]) {
  return (int64_t(c[2]) * dims[1] + c[1]) * dims[0] + c[0];
}

// Chooses dims and width from the bounding box lo..hi of the molecule's n_finite finite atoms. The grid
// holds at most about 8 cells per atom (a sparse molecule gets wider cells), so memory stays linear.
inline void plan_cell_grid(CellGrid& g, const double lo[3], const double hi[3], int64_t n_finite, double cutoff) {
  for (int d = 0; d < 3; ++d) {
    g.dims[d] = 1;
    g.origin[d] = 0.0;
  }
  g.inv_width = 0.0;
  double width = cutoff * (1.0 + kCellWidthMargin);
  if (n_finite <= 0 || !(width > 0.0) || !std::isfinite(width)) return;  // one cell: brute force
  for (int d = 0; d < 3; ++d) {
    if (!(hi[d] >= lo[d]) || !std::isfinite(lo[d]) || !std::isfinite(hi[d])) return;
  }
  const double max_cells = 8.0 * double(n_finite) + 64.0;
  for (int iter = 0; iter < 200; ++iter) {
    const double inv_width = 1.0 / width;
    double total = 1.0;
    double cells[3];
    for (int d = 0; d < 3; ++d) {
      cells[d] = std::floor((hi[d] - lo[d]) * inv_width) + 1.0;
      if (!(cells[d] >= 1.0)) cells[d] = 1.0;
      if (cells[d] > kMaxCellsPerAxis) cells[d] = kMaxCellsPerAxis;
      total *= cells[d];
    }
    if (total <= max_cells) {
      for (int d = 0; d < 3; ++d) {
        g.dims[d] = int32_t(cells[d]);
        g.origin[d] = lo[d];
      }
      g.inv_width = inv_width;
      return;
    }
    width *= std::cbrt(total / max_cells) * 1.01;  // only ever wider: cells stay >= cutoff
  }
  // Not reached for finite boxes; one cell is always correct.
}

}  // namespace fastdipole::cuda
