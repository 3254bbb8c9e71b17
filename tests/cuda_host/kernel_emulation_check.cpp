// Runs the CUDA kernels of csrc/cuda on the CPU emulator (tests/cuda_host/emu) and compares every op with
// the CPU kernels of csrc/cpu. Built and run by tests/test_cuda_compile.py; no GPU needed.
//
//   kernel_emulation_check [molecules.bin] [--kernels CHOICE,CHOICE,...]
// molecules.bin: int64 n_atoms, int64 n_molecules, float64 R[n_atoms][3] (Angstrom), int64 offsets[n_mol + 1]
// (the pytest wrapper writes real QM9 molecules plus a dense cluster of them); without it, random molecules.
// --kernels: the envsum kernel choices to run (csrc/cuda/kernel_plan.h syntax; default "auto"; the pytest
// wrapper passes fastdipole.ops.kernels.ENVSUM_KERNELS). A choice that cannot run a shape must be refused by
// the plan, and a refused plan by the launchers.
//
// Checks, float32 and float64:
//   neighbor pairs: identical to the CPU builder, through the brute-force path, the cell-list path and a mix;
//   gaussian envsum forward and backward: close to the CPU kernels for several (n_sens, n_features), with
//   each kernel choice;
//   segmented dipole forward and backward: close to the CPU kernels;
//   malformed indices: the kernels run without touching memory outside the inputs (with -fsanitize=address).
// Prints "ok ..." and exits 0, or the failures and exits 1.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "cpu/dipole.h"
#include "cpu/envsum.h"
#include "cpu/neighbors.h"
#include "cuda/launchers.h"
#include "cuda/scan.cuh"

namespace fc = fastdipole::cuda;
namespace fp = fastdipole::cpu;

namespace {

int failures = 0;
// How many envsum checks ran each kernel: [forward lanes, forward block, backward lanes, backward tiled].
int64_t kernel_runs[4] = {0, 0, 0, 0};
int64_t refused_choices = 0;

void fail(const std::string& what) {
  if (failures < 30) std::fprintf(stderr, "FAIL: %s\n", what.c_str());
  ++failures;
}

void check_cuda(cudaError_t err, const std::string& what) {
  if (err != cudaSuccess) fail(what + ": launcher returned error " + std::to_string(err));
}

// Exact-size host buffers, so that AddressSanitizer sees any access past their ends.
class VectorScratch final : public fc::ScratchAllocator {
 public:
  void* allocate(std::size_t bytes) override {
    blocks_.push_back(std::make_unique<std::vector<unsigned char>>(bytes > 0 ? bytes : 1, 0xCD));
    return blocks_.back()->data();
  }

 private:
  std::vector<std::unique_ptr<std::vector<unsigned char>>> blocks_;
};

struct Molecules {
  std::vector<double> R;  // (n, 3)
  std::vector<int64_t> offsets;
  int64_t n_atoms() const { return int64_t(R.size() / 3); }
  int64_t n_molecules() const { return int64_t(offsets.size()) - 1; }
};

Molecules read_or_make(int argc, char** argv) {
  Molecules m;
  if (argc > 1) {
    FILE* f = std::fopen(argv[1], "rb");
    if (f == nullptr) {
      std::fprintf(stderr, "cannot open %s\n", argv[1]);
      std::exit(2);
    }
    int64_t header[2];
    bool ok = std::fread(header, sizeof(int64_t), 2, f) == 2;
    m.R.resize(static_cast<size_t>(3 * header[0]));
    m.offsets.resize(static_cast<size_t>(header[1] + 1));
    ok = ok && std::fread(m.R.data(), sizeof(double), m.R.size(), f) == m.R.size();
    ok = ok && std::fread(m.offsets.data(), sizeof(int64_t), m.offsets.size(), f) == m.offsets.size();
    std::fclose(f);
    if (!ok) {
      std::fprintf(stderr, "short read from %s\n", argv[1]);
      std::exit(2);
    }
    return m;
  }
  std::mt19937_64 rng(7);
  std::normal_distribution<double> g(0.0, 1.2);
  m.offsets.push_back(0);
  for (int mol = 0; mol < 10; ++mol) {
    const int n = mol == 4 ? 0 : (mol == 7 ? 150 : 5 + mol);
    for (int a = 0; a < n; ++a) {
      const double scale = mol == 7 ? 4.0 : 1.0;
      for (int d = 0; d < 3; ++d) m.R.push_back(scale * g(rng));
    }
    m.offsets.push_back(m.offsets.back() + n);
  }
  return m;
}

template <typename T>
std::vector<T> cast(const std::vector<double>& v) {
  return std::vector<T>(v.begin(), v.end());
}

struct Pairs {
  std::vector<int64_t> first, second, row;
};

template <typename T>
Pairs cpu_pairs(const std::vector<T>& R, const Molecules& m, double cutoff) {
  Pairs p;
  p.row.resize(static_cast<size_t>(m.n_atoms() + 1));
  fp::NeighborListBuilder<T> b(R.data(), m.n_atoms(), m.offsets.data(), m.n_molecules(), cutoff, fp::serial_for());
  const int64_t n = b.count(p.row.data());
  p.first.resize(static_cast<size_t>(n));
  p.second.resize(static_cast<size_t>(n));
  b.fill(p.first.data(), p.second.data());
  return p;
}

template <typename T>
void check_neighbors(const Molecules& m, const char* dtype) {
  const double cutoff = 6.5;
  const std::vector<T> R = cast<T>(m.R);
  const Pairs want = cpu_pairs(R, m, cutoff);
  int64_t max_atoms = 0;
  for (int64_t k = 0; k < m.n_molecules(); ++k) max_atoms = std::max(max_atoms, m.offsets[k + 1] - m.offsets[k]);
  for (int64_t min_atoms : {int64_t(1), std::max<int64_t>(2, max_atoms / 2), int64_t(1) << 40}) {
    const std::string label = std::string("neighbor_pairs ") + dtype + " cell_list_min_atoms=" + std::to_string(min_atoms);
    VectorScratch scratch;
    fc::NeighborPairsLauncher<T> nl(R.data(), m.n_atoms(), m.offsets.data(), m.offsets.data(), m.n_molecules(), cutoff,
                                    min_atoms, scratch, nullptr);
    Pairs got;
    got.row.assign(static_cast<size_t>(m.n_atoms() + 1), -7);
    int64_t n_pairs = -1;
    check_cuda(nl.count(got.row.data(), &n_pairs), label + " count");
    if (n_pairs != int64_t(want.first.size())) {
      fail(label + ": " + std::to_string(n_pairs) + " pairs, CPU " + std::to_string(want.first.size()));
      continue;
    }
    got.first.assign(static_cast<size_t>(n_pairs), -7);
    got.second.assign(static_cast<size_t>(n_pairs), -7);
    check_cuda(nl.fill(got.first.data(), got.second.data()), label + " fill");
    if (got.row != want.row) fail(label + ": row_offsets differ");
    if (got.first != want.first) fail(label + ": pair_first differs");
    if (got.second != want.second) fail(label + ": pair_second differs");
    if (min_atoms == 1 && nl.n_cell_list_molecules() == 0 && m.n_atoms() > 0) fail(label + ": cell list not used");
  }
}

template <typename T>
bool close(const std::vector<T>& got, const std::vector<T>& want, double tol, const std::string& what) {
  if (got.size() != want.size()) {
    fail(what + ": size " + std::to_string(got.size()) + " vs " + std::to_string(want.size()));
    return false;
  }
  double scale = 1.0;
  for (T w : want) scale = std::max(scale, double(std::fabs(w)));
  for (size_t k = 0; k < got.size(); ++k) {
    const double d = std::fabs(double(got[k]) - double(want[k]));
    if (!(d <= tol * scale + tol * std::fabs(double(want[k])))) {
      fail(what + ": element " + std::to_string(k) + " got " + std::to_string(double(got[k])) + " want " +
           std::to_string(double(want[k])));
      return false;
    }
  }
  return true;
}

template <typename T>
void check_envsum(const Molecules& m, int64_t S, int64_t F, const char* dtype, const std::string& kernel) {
  const double cutoff = 6.5;
  const double tol = sizeof(T) == 4 ? 2e-5 : 1e-11;
  const std::string label = std::string("envsum ") + dtype + " S=" + std::to_string(S) + " F=" + std::to_string(F) +
                            " kernel=" + kernel;
  fc::EnvsumKernelChoice choice;
  if (!fc::parse_envsum_kernel(kernel, &choice)) {
    fail(label + ": not a kernel choice");
    return;
  }
  const std::vector<T> R = cast<T>(m.R);
  const Pairs pairs = cpu_pairs(R, m, cutoff);
  const int64_t N = m.n_atoms(), P = int64_t(pairs.first.size());
  std::vector<T> r(static_cast<size_t>(P));
  for (int64_t p = 0; p < P; ++p) {
    T s = 0;
    for (int d = 0; d < 3; ++d) {
      const T x = R[static_cast<size_t>(3 * pairs.second[p] + d)] - R[static_cast<size_t>(3 * pairs.first[p] + d)];
      s += x * x;
    }
    r[static_cast<size_t>(p)] = std::sqrt(s);
  }
  std::mt19937_64 rng(uint64_t(S * 1000 + F));
  std::normal_distribution<double> g(0.0, 1.0);
  std::uniform_real_distribution<double> u(0.9, 1.1);
  std::vector<T> z(static_cast<size_t>(N * F)), mu(static_cast<size_t>(S)), sigma(static_cast<size_t>(S)), grad_env(static_cast<size_t>(N * S * F));
  for (auto& x : z) x = T(g(rng));
  for (auto& x : grad_env) x = T(g(rng));
  for (int64_t v = 0; v < S; ++v) {
    const double inv = S > 1 ? 1.0 / 5.0 + (1.0 / 0.85 - 1.0 / 5.0) * double(v) / double(S - 1) : 1.0 / 2.0;
    mu[static_cast<size_t>(v)] = T(u(rng) / inv);
    sigma[static_cast<size_t>(v)] = T(2.0 * double(S) * 0.85 * u(rng));
  }

  fp::EnvsumProblem<T> cp;
  cp.z = z.data();
  cp.n_atoms = N;
  cp.n_features = F;
  cp.r = r.data();
  cp.pair_first = pairs.first.data();
  cp.pair_second = pairs.second.data();
  cp.row_offsets = pairs.row.data();
  cp.n_pairs = P;
  cp.mu = mu.data();
  cp.sigma = sigma.data();
  cp.n_sens = S;
  cp.cutoff = cutoff;
  fc::EnvsumArgs<T> a;
  a.z = z.data();
  a.r = r.data();
  a.pair_first = pairs.first.data();
  a.pair_second = pairs.second.data();
  a.row_offsets = pairs.row.data();
  a.mu = mu.data();
  a.sigma = sigma.data();
  a.n_atoms = N;
  a.n_features = F;
  a.n_pairs = P;
  a.n_sens = S;
  a.cutoff = cutoff;

  const fc::EnvsumPlan plan = fc::plan_envsum(fc::envsum_shape(a), choice);
  std::vector<T> env_want(static_cast<size_t>(N * S * F)), env_got(static_cast<size_t>(N * S * F), T(-777));
  if (!plan.ok()) {  // the choice cannot run this shape: the launchers must refuse the plan, launching nothing
    ++refused_choices;
    if (fc::gaussian_envsum_forward(a, plan, env_got.data(), nullptr) != cudaErrorInvalidValue) {
      fail(label + ": a refused plan (" + plan.error + ") was launched");
    }
    return;
  }
  ++kernel_runs[plan.forward == fc::EnvsumForwardKernel::kLanes ? 0 : 1];
  ++kernel_runs[plan.backward == fc::EnvsumBackwardKernel::kLanes ? 2 : 3];
  // A plan with widths made for another problem is refused too (its kernels would not match this one).
  fc::EnvsumPlan wrong = plan;
  wrong.lanes_slots = plan.lanes_slots == 8 ? 16 : 8;
  wrong.block_group = plan.block_group == 4 ? 8 : 4;
  if (fc::gaussian_envsum_forward(a, wrong, env_got.data(), nullptr) != cudaErrorInvalidValue) {
    fail(label + ": a plan with other widths was launched");
  }
  fp::gaussian_envsum_forward(cp, env_want.data(), fp::serial_for());
  check_cuda(fc::gaussian_envsum_forward(a, plan, env_got.data(), nullptr), label + " forward");
  close(env_got, env_want, tol, label + " env");
  double env_norm = 0;
  for (T x : env_want) env_norm += std::fabs(double(x));
  if (!(env_norm > 0)) fail(label + ": env is all zero (test data too sparse)");

  // Pairs grouped by sending atom: a stable sort of pair_second, as register_cuda.cpp does with torch.
  std::vector<int64_t> order(static_cast<size_t>(P)), second_offsets(static_cast<size_t>(N + 1));
  for (int64_t p = 0; p < P; ++p) order[static_cast<size_t>(p)] = p;
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t x, int64_t y) { return pairs.second[static_cast<size_t>(x)] < pairs.second[static_cast<size_t>(y)]; });
  for (int64_t j = 0; j <= N; ++j) {
    second_offsets[static_cast<size_t>(j)] = std::lower_bound(order.begin(), order.end(), j, [&](int64_t p, int64_t value) {
                                  return pairs.second[static_cast<size_t>(p)] < value;
                                }) - order.begin();
  }
  std::vector<T> gz_w(static_cast<size_t>(N * F)), gr_w(static_cast<size_t>(P)), gm_w(static_cast<size_t>(S)), gs_w(static_cast<size_t>(S));
  fp::gaussian_envsum_backward(cp, grad_env.data(), gz_w.data(), gr_w.data(), gm_w.data(), gs_w.data(),
                               fp::serial_for());
  std::vector<T> gz(static_cast<size_t>(N * F), T(-777)), gr(static_cast<size_t>(P), T(-777)), gm(static_cast<size_t>(S), T(-777)), gs(static_cast<size_t>(S), T(-777));
  std::vector<unsigned char> scratch(fc::gaussian_envsum_backward_scratch_bytes(a), 0xCD);
  const int64_t* group_order = order.data();
  const int64_t* group_offsets = second_offsets.data();
  check_cuda(fc::gaussian_envsum_backward(a, plan, grad_env.data(), group_order, group_offsets, scratch.data(),
                                          gz.data(), gr.data(), gm.data(), gs.data(), nullptr),
             label + " backward");
  close(gz, gz_w, tol, label + " grad_z");
  close(gr, gr_w, tol, label + " grad_r");
  close(gm, gm_w, tol, label + " grad_mu");
  close(gs, gs_w, tol, label + " grad_sigma");

  // Repeated runs: identical bits.
  std::vector<T> env2(env_got.size()), gz2(gz.size()), gr2(gr.size()), gm2(gm.size()), gs2(gs.size());
  fc::gaussian_envsum_forward(a, plan, env2.data(), nullptr);
  fc::gaussian_envsum_backward(a, plan, grad_env.data(), group_order, group_offsets, scratch.data(), gz2.data(),
                               gr2.data(), gm2.data(), gs2.data(), nullptr);
  if (env2 != env_got || gz2 != gz || gr2 != gr || gm2 != gm || gs2 != gs) fail(label + ": repeated run differs");

  // Skipped outputs (null, as register_cuda.cpp passes for output_mask): the rest are the same bits, and
  // without grad_z the pair grouping is not read at all.
  {
    std::vector<T> gm3(gm.size(), T(-777)), gs3(gs.size(), T(-777)), gz3(gz.size(), T(-777));
    T* const none = nullptr;
    const int64_t* const no_index = nullptr;
    check_cuda(fc::gaussian_envsum_backward(a, plan, grad_env.data(), no_index, no_index, scratch.data(), none, none,
                                            gm3.data(), gs3.data(), nullptr),
               label + " backward without grad_z, grad_r");
    check_cuda(fc::gaussian_envsum_backward(a, plan, grad_env.data(), group_order, group_offsets, scratch.data(),
                                            gz3.data(), none, none, none, nullptr),
               label + " backward with grad_z only");
    if (gm3 != gm || gs3 != gs || gz3 != gz) fail(label + ": skipping outputs changed the others");
  }

  // Malformed indices: skipped, never out of bounds (AddressSanitizer watches the exact-size buffers).
  if (P >= 3 && N >= 2) {
    std::vector<int64_t> bad_first = pairs.first, bad_second = pairs.second, bad_row = pairs.row;
    bad_second[0] = int64_t(1) << 40;
    bad_second[1] = -3;
    bad_first[2] = pairs.first[2] + 1;
    bad_row[1] = int64_t(1) << 45;
    bad_row[static_cast<size_t>(N) / 2] = -9;
    fc::EnvsumArgs<T> b = a;
    b.pair_first = bad_first.data();
    b.pair_second = bad_second.data();
    b.row_offsets = bad_row.data();
    std::vector<T> env_bad(env_got.size());
    check_cuda(fc::gaussian_envsum_forward(b, plan, env_bad.data(), nullptr), label + " malformed forward");
    std::vector<int64_t> bad_order(order), bad_so(second_offsets);
    bad_order[0] = int64_t(1) << 41;
    bad_so[1] = int64_t(1) << 42;
    check_cuda(fc::gaussian_envsum_backward(b, plan, grad_env.data(), bad_order.data(), bad_so.data(), scratch.data(),
                                            gz2.data(), gr2.data(), gm2.data(), gs2.data(), nullptr),
               label + " malformed backward");
    for (T x : env_bad) {
      if (!std::isfinite(double(x))) {
        fail(label + ": malformed input gave a non-finite env");
        break;
      }
    }
  }
}

template <typename T>
void check_dipole(const Molecules& m, const char* dtype) {
  const double tol = sizeof(T) == 4 ? 1e-5 : 1e-12;
  const std::string label = std::string("dipole ") + dtype;
  const int64_t N = m.n_atoms(), M = m.n_molecules();
  const std::vector<T> R = cast<T>(m.R);
  std::mt19937_64 rng(3);
  std::normal_distribution<double> g(0.0, 0.4);
  std::vector<T> q(static_cast<size_t>(N)), gmu(static_cast<size_t>(3 * M));
  for (auto& x : q) x = T(g(rng));
  for (auto& x : gmu) x = T(g(rng));
  std::vector<T> mu_w(static_cast<size_t>(3 * M)), mu(static_cast<size_t>(3 * M), T(-777));
  fp::segmented_dipole_forward(q.data(), R.data(), m.offsets.data(), M, mu_w.data(), fp::serial_for());
  check_cuda(fc::segmented_dipole_forward(q.data(), R.data(), m.offsets.data(), N, M, mu.data(), nullptr), label);
  close(mu, mu_w, tol, label + " forward");
  std::vector<T> gq_w(static_cast<size_t>(N)), gR_w(static_cast<size_t>(3 * N)), gq(static_cast<size_t>(N), T(-777)), gR(static_cast<size_t>(3 * N), T(-777));
  fp::segmented_dipole_backward(gmu.data(), q.data(), R.data(), m.offsets.data(), M, gq_w.data(), gR_w.data(),
                                fp::serial_for());
  check_cuda(fc::segmented_dipole_backward(gmu.data(), q.data(), R.data(), m.offsets.data(), N, M, gq.data(),
                                           gR.data(), nullptr),
             label + " backward");
  close(gq, gq_w, tol, label + " grad_q");
  close(gR, gR_w, tol, label + " grad_R");
  // Malformed offsets: clamped, never out of bounds.
  if (M >= 3) {
    std::vector<int64_t> bad(m.offsets);
    bad[1] = int64_t(1) << 40;
    bad[2] = -5;
    check_cuda(fc::segmented_dipole_forward(q.data(), R.data(), bad.data(), N, M, mu.data(), nullptr), label + " bad");
    check_cuda(fc::segmented_dipole_backward(gmu.data(), q.data(), R.data(), bad.data(), N, M, gq.data(), gR.data(),
                                             nullptr),
               label + " bad backward");
  }
}

// The in-place exclusive scan (csrc/cuda/scan.cuh) over sizes around its chunk and block boundaries.
void check_scan() {
  std::mt19937_64 rng(11);
  std::uniform_int_distribution<int64_t> u(0, 40);
  for (int64_t n : {int64_t(1), int64_t(2), int64_t(255), int64_t(256), int64_t(257), int64_t(2047), int64_t(2048),
                    int64_t(2049), int64_t(70001)}) {
    std::vector<int64_t> data(static_cast<size_t>(n)), want(static_cast<size_t>(n));
    int64_t sum = 0;
    for (int64_t k = 0; k < n; ++k) {
      data[static_cast<size_t>(k)] = u(rng);
      want[static_cast<size_t>(k)] = sum;
      sum += data[static_cast<size_t>(k)];
    }
    std::vector<int64_t> scratch(fastdipole::cuda::detail::exclusive_scan_scratch_bytes(n) / sizeof(int64_t));
    check_cuda(fastdipole::cuda::detail::exclusive_scan_inplace(data.data(), n, scratch.data(), nullptr), "scan");
    if (data != want) fail("exclusive scan of " + std::to_string(n) + " values");
  }
}

}  // namespace

// Seconds since the previous call (progress lines on stderr show where the emulator spends its time).
double lap() {
  static auto last = std::chrono::steady_clock::now();
  const auto now = std::chrono::steady_clock::now();
  const double s = std::chrono::duration<double>(now - last).count();
  last = now;
  return s;
}

// The --kernels list (comma-separated), "auto" without one; the other arguments stay for read_or_make.
std::vector<std::string> kernel_choices(int& argc, char** argv) {
  std::vector<std::string> out;
  for (int k = 1; k + 1 < argc; ++k) {
    if (std::string(argv[k]) != "--kernels") continue;
    std::string list = argv[k + 1];
    for (size_t start = 0; start <= list.size();) {
      const size_t comma = std::min(list.find(',', start), list.size());
      out.push_back(list.substr(start, comma - start));
      start = comma + 1;
    }
    for (int j = k; j + 2 < argc; ++j) argv[j] = argv[j + 2];
    argc -= 2;
    break;
  }
  if (out.empty()) out.push_back("auto");
  return out;
}

int main(int argc, char** argv) {
  lap();
  const std::vector<std::string> kernels = kernel_choices(argc, argv);
  check_scan();
  std::fprintf(stderr, "scan %.1f s\n", lap());
  const Molecules m = read_or_make(argc, argv);
  check_neighbors<float>(m, "float32");
  check_neighbors<double>(m, "float64");
  std::fprintf(stderr, "neighbor pairs %.1f s\n", lap());
  // Envsum on the first small molecules only (the emulator runs one fiber per CUDA thread: keep it small);
  // {n_sens, n_features, atom budget, merged}: the QM9 layer, the one-hot layer, F = 1, many sensitivities
  // (beyond the lanes kernels: the block forward and the tiled backward; small tiles: rows span several),
  // each register width of the lanes kernels (8, 16, 20, 24, 32 sensitivities; one and two feature columns per
  // lane, partly idle), more features than threads (several features per thread, several chunks per warp,
  // featsum chunks), and so many features that the float64 block forward cannot stage them (global reads).
  // merged = 1 puts the molecules' atoms into one molecule: the overlapping molecules give rows of more
  // than 32 pairs (several pair tiles per row).
  const int64_t shapes[][4] = {{20, 32, 120, 0}, {5, 3, 120, 0},  {3, 1, 120, 0},   {70, 40, 40, 0},
                               {16, 60, 60, 0},  {22, 40, 40, 0}, {32, 33, 40, 0},  {20, 128, 60, 1},
                               {7, 300, 30, 0},  {3, 900, 12, 0}};
  for (const auto& s : shapes) {
    Molecules small;
    small.offsets.push_back(0);
    for (int64_t k = 0; k < m.n_molecules() && small.n_atoms() < s[2]; ++k) {
      if (m.offsets[k + 1] - m.offsets[k] > 60) continue;
      small.R.insert(small.R.end(), m.R.begin() + 3 * m.offsets[k], m.R.begin() + 3 * m.offsets[k + 1]);
      small.offsets.push_back(small.offsets.back() + (m.offsets[k + 1] - m.offsets[k]));
    }
    if (s[3] == 1) {
      small.offsets = {0, small.n_atoms()};
      const Pairs merged = cpu_pairs(small.R, small, 6.5);
      int64_t longest = 0;
      for (size_t i = 0; i + 1 < merged.row.size(); ++i) longest = std::max(longest, merged.row[i + 1] - merged.row[i]);
      if (longest <= 32) {
        std::fprintf(stderr, "FAIL merged molecules: longest row has %lld pairs, want > 32\n", (long long)longest);
        ++failures;
      }
    }
    for (const std::string& kernel : kernels) {
      check_envsum<float>(small, s[0], s[1], "float32", kernel);
      check_envsum<double>(small, s[0], s[1], "float64", kernel);
    }
    std::fprintf(stderr, "envsum S=%lld F=%lld %.1f s\n", (long long)s[0], (long long)s[1], lap());
  }
  check_dipole<float>(m, "float32");
  check_dipole<double>(m, "float64");
  std::fprintf(stderr, "dipole %.1f s\n", lap());
  if (failures > 0) {
    std::fprintf(stderr, "%d failure(s)\n", failures);
    return 1;
  }
  std::string kernel_list;
  for (const std::string& kernel : kernels) kernel_list += (kernel_list.empty() ? "" : ",") + kernel;
  std::printf("ok kernel_emulation_check: %lld atoms, %lld molecules; neighbor pairs, envsum, dipole (fp32, fp64) "
              "match the CPU kernels; envsum kernels %s: forward_lanes=%lld forward_block=%lld "
              "backward_lanes=%lld backward_tiled=%lld refused=%lld\n",
              (long long)m.n_atoms(), (long long)m.n_molecules(), kernel_list.c_str(), (long long)kernel_runs[0],
              (long long)kernel_runs[1], (long long)kernel_runs[2], (long long)kernel_runs[3],
              (long long)refused_choices);
  return 0;
}
