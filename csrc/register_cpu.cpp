// torch.ops.fastdipole: operator schemas (the contract the CUDA side registers against) and the CPU
// implementations. The only CPU file that includes torch headers; the kernels in csrc/cpu/ take plain
// pointers. Inputs are validated here (shapes, dtypes, index ranges, CSR offsets) with one-line messages.
#include <ATen/Config.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#if AT_PARALLEL_OPENMP && !defined(_OPENMP)
#define FASTDIPOLE_SERIAL 1  // torch's at::parallel_for is an inline OpenMP loop and OpenMP is off here
#else
#include <ATen/Parallel.h>
#endif

#include <array>
#include <cmath>
#include <string>
#include <tuple>

#include "cpu/dipole.h"
#include "cpu/envsum.h"
#include "cpu/neighbors.h"
#include "op_checks.h"

namespace fastdipole {
namespace {

using at::Tensor;

cpu::ParallelFor torch_parallel_for() {
  return [](int64_t begin, int64_t end, int64_t grain, const cpu::RangeBody& body) {
#ifdef FASTDIPOLE_SERIAL
    (void)grain;
    if (begin < end) body(begin, end);
#else
    at::parallel_for(begin, end, grain, [&](int64_t b, int64_t e) { body(b, e); });
#endif
  };
}

void check_cpu(const Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), "fastdipole.", op, ": ", name, " must be a CPU tensor, got ", t.device());
}

using checks::check_csr_values;
using checks::check_index;

// CSR offsets: 1-D int64, offsets[0] = 0, non-decreasing, offsets[-1] = total.
void check_csr(const Tensor& offsets, int64_t total, const char* op, const char* name, const char* what) {
  check_index(offsets, op, name);
  check_csr_values(offsets, total, op, name, what);
}

// ---------------------------------------------------------------------------------------------------------
// neighbor_pairs
// ---------------------------------------------------------------------------------------------------------
// cell_list_min_atoms only steers the CUDA kernels (which molecules take the cell list); it is checked here
// and otherwise ignored (the CPU builder has its own size rule, csrc/cpu/neighbors.h).
std::tuple<Tensor, Tensor, Tensor> neighbor_pairs_cpu(const Tensor& R_in, const Tensor& offsets_in, double cutoff,
                                                      int64_t cell_list_min_atoms) {
  const char* op = "neighbor_pairs";
  check_cpu(R_in, op, "R");
  check_cpu(offsets_in, op, "offsets");
  checks::check_neighbor_inputs(R_in, cutoff, op);
  checks::check_cell_list_min_atoms(cell_list_min_atoms, op);
  const Tensor R = R_in.contiguous();
  const Tensor offsets = offsets_in.contiguous();
  const int64_t n_atoms = R.size(0);
  check_csr(offsets, n_atoms, op, "offsets", "atoms (R.shape[0])");
  const int64_t n_molecules = offsets.numel() - 1;

  Tensor row_offsets = at::empty({n_atoms + 1}, R.options().dtype(at::kLong));
  Tensor first, second;
  auto run = [&](auto* R_ptr) {
    using T = std::remove_const_t<std::remove_pointer_t<decltype(R_ptr)>>;
    cpu::NeighborListBuilder<T> builder(R_ptr, n_atoms, offsets.data_ptr<int64_t>(), n_molecules, cutoff,
                                        torch_parallel_for());
    const int64_t n_pairs = builder.count(row_offsets.data_ptr<int64_t>());
    first = at::empty({n_pairs}, row_offsets.options());
    second = at::empty({n_pairs}, row_offsets.options());
    builder.fill(first.data_ptr<int64_t>(), second.data_ptr<int64_t>());
  };
  if (R.scalar_type() == at::kFloat) {
    run(R.data_ptr<float>());
  } else {
    run(R.data_ptr<double>());
  }
  return {first, second, row_offsets};
}

// ---------------------------------------------------------------------------------------------------------
// gaussian_envsum
// ---------------------------------------------------------------------------------------------------------
using checks::EnvsumInputs;

// Validates the inputs shared by the forward and the backward, index values included (this op reads them);
// returns contiguous copies where needed.
EnvsumInputs check_envsum_inputs(const char* op, const Tensor& z, const Tensor& r, const Tensor& pair_first,
                                 const Tensor& pair_second, const Tensor& row_offsets, const Tensor& mu,
                                 const Tensor& sigma, double cutoff) {
  EnvsumInputs in = EnvsumInputs::checked(op, z, r, pair_first, pair_second, row_offsets, mu, sigma, cutoff,
                                          [op](const Tensor& t, const char* name) { check_cpu(t, op, name); });
  const int64_t n_atoms = z.size(0), n_pairs = r.numel();
  check_csr(in.row_offsets, n_pairs, op, "row_offsets", "pairs");
  const int64_t* ro = in.row_offsets.data_ptr<int64_t>();
  const int64_t* pf = in.pair_first.data_ptr<int64_t>();
  const int64_t* ps = in.pair_second.data_ptr<int64_t>();
  for (int64_t i = 0; i < n_atoms; ++i) {
    for (int64_t p = ro[i]; p < ro[i + 1]; ++p) {
      TORCH_CHECK(pf[p] == i, "fastdipole.", op, ": pairs must be sorted by pair_first with row_offsets as their "
                  "CSR offsets, but pair_first[", p, "] = ", pf[p], " lies in the row of atom ", i);
    }
  }
  for (int64_t p = 0; p < n_pairs; ++p) {
    TORCH_CHECK(ps[p] >= 0 && ps[p] < n_atoms, "fastdipole.", op, ": pair_second[", p, "] = ", ps[p],
                " is out of range [0, ", n_atoms, ")");
  }
  return in;
}

template <typename T>
cpu::EnvsumProblem<T> envsum_problem(const EnvsumInputs& in, double cutoff) {
  cpu::EnvsumProblem<T> p;
  p.z = in.z.data_ptr<T>();
  p.n_atoms = in.z.size(0);
  p.n_features = in.z.size(1);
  p.r = in.r.data_ptr<T>();
  p.pair_first = in.pair_first.data_ptr<int64_t>();
  p.pair_second = in.pair_second.data_ptr<int64_t>();
  p.row_offsets = in.row_offsets.data_ptr<int64_t>();
  p.n_pairs = in.r.numel();
  p.mu = in.mu.data_ptr<T>();
  p.sigma = in.sigma.data_ptr<T>();
  p.n_sens = in.mu.numel();
  p.cutoff = cutoff;
#ifdef FASTDIPOLE_SERIAL
  p.threads = 1;
#else
  p.threads = at::get_num_threads();
#endif
  return p;
}

// kernel_choice: the CUDA kernel override (csrc/cuda/kernel_plan.h); its syntax is checked, the CPU has one kernel.
Tensor gaussian_envsum_cpu(const Tensor& z, const Tensor& r, const Tensor& pair_first, const Tensor& pair_second,
                           const Tensor& row_offsets, const Tensor& mu, const Tensor& sigma, double cutoff,
                           c10::string_view kernel_choice) {
  checks::check_envsum_kernel(kernel_choice, "gaussian_envsum");
  const EnvsumInputs in =
      check_envsum_inputs("gaussian_envsum", z, r, pair_first, pair_second, row_offsets, mu, sigma, cutoff);
  Tensor env = at::empty({in.z.size(0), in.mu.numel(), in.z.size(1)}, in.z.options());
  if (in.z.scalar_type() == at::kFloat) {
    cpu::gaussian_envsum_forward(envsum_problem<float>(in, cutoff), env.data_ptr<float>(), torch_parallel_for());
  } else {
    cpu::gaussian_envsum_forward(envsum_problem<double>(in, cutoff), env.data_ptr<double>(), torch_parallel_for());
  }
  return env;
}

// output_mask: which of (grad_z, grad_r, grad_mu, grad_sigma) to compute; the others come back undefined
// (None in Python). Without grad_z the featsum pass is skipped; without grad_r, grad_mu and grad_sigma the
// sensesum pass is. kernel_choice: as for the forward.
std::tuple<Tensor, Tensor, Tensor, Tensor> gaussian_envsum_backward_cpu(
    const Tensor& grad_env_in, const Tensor& z, const Tensor& r, const Tensor& pair_first, const Tensor& pair_second,
    const Tensor& row_offsets, const Tensor& mu, const Tensor& sigma, double cutoff, std::array<bool, 4> output_mask,
    c10::string_view kernel_choice) {
  const char* op = "gaussian_envsum_backward";
  checks::check_envsum_kernel(kernel_choice, op);
  const EnvsumInputs in = check_envsum_inputs(op, z, r, pair_first, pair_second, row_offsets, mu, sigma, cutoff);
  check_cpu(grad_env_in, op, "grad_env");
  checks::check_grad_env(op, grad_env_in, in.z, in.mu);
  const Tensor grad_env = grad_env_in.contiguous();
  Tensor grad_z = output_mask[0] ? at::empty_like(in.z) : Tensor();
  Tensor grad_r = output_mask[1] ? at::empty_like(in.r) : Tensor();
  Tensor grad_mu = output_mask[2] ? at::empty_like(in.mu) : Tensor();
  Tensor grad_sigma = output_mask[3] ? at::empty_like(in.sigma) : Tensor();
  auto run = [&](auto tag) {
    using T = decltype(tag);
    auto ptr = [](Tensor& t) { return t.defined() ? t.data_ptr<T>() : nullptr; };
    cpu::gaussian_envsum_backward(envsum_problem<T>(in, cutoff), grad_env.data_ptr<T>(), ptr(grad_z), ptr(grad_r),
                                  ptr(grad_mu), ptr(grad_sigma), torch_parallel_for());
  };
  if (in.z.scalar_type() == at::kFloat) {
    run(float{});
  } else {
    run(double{});
  }
  return {grad_z, grad_r, grad_mu, grad_sigma};
}

// ---------------------------------------------------------------------------------------------------------
// segmented_dipole
// ---------------------------------------------------------------------------------------------------------
void check_dipole_inputs(const char* op, const Tensor& q, const Tensor& R, const Tensor& offsets) {
  check_cpu(q, op, "q");
  check_cpu(R, op, "R");
  check_cpu(offsets, op, "offsets");
  checks::check_dipole_inputs(op, q, R, offsets);
}

Tensor segmented_dipole_cpu(const Tensor& q_in, const Tensor& R_in, const Tensor& offsets_in) {
  const char* op = "segmented_dipole";
  check_dipole_inputs(op, q_in, R_in, offsets_in);
  const Tensor q = q_in.contiguous(), R = R_in.contiguous(), offsets = offsets_in.contiguous();
  check_csr(offsets, R.size(0), op, "offsets", "atoms (R.shape[0])");
  const int64_t n_molecules = offsets.numel() - 1;
  Tensor mu = at::empty({n_molecules, 3}, R.options());
  auto run = [&](auto tag) {
    using T = decltype(tag);
    cpu::segmented_dipole_forward(q.data_ptr<T>(), R.data_ptr<T>(), offsets.data_ptr<int64_t>(), n_molecules,
                                  mu.data_ptr<T>(), torch_parallel_for());
  };
  if (R.scalar_type() == at::kFloat) {
    run(float{});
  } else {
    run(double{});
  }
  return mu;
}

std::tuple<Tensor, Tensor> segmented_dipole_backward_cpu(const Tensor& grad_mu_in, const Tensor& q_in,
                                                         const Tensor& R_in, const Tensor& offsets_in) {
  const char* op = "segmented_dipole_backward";
  check_dipole_inputs(op, q_in, R_in, offsets_in);
  check_cpu(grad_mu_in, op, "grad_mu");
  const Tensor q = q_in.contiguous(), R = R_in.contiguous(), offsets = offsets_in.contiguous();
  check_csr(offsets, R.size(0), op, "offsets", "atoms (R.shape[0])");
  const int64_t n_molecules = offsets.numel() - 1;
  checks::check_grad_dipole(op, grad_mu_in, R, n_molecules);
  const Tensor grad_mu = grad_mu_in.contiguous();
  Tensor grad_q = at::empty_like(q);
  Tensor grad_R = at::empty_like(R);
  auto run = [&](auto tag) {
    using T = decltype(tag);
    cpu::segmented_dipole_backward(grad_mu.data_ptr<T>(), q.data_ptr<T>(), R.data_ptr<T>(),
                                   offsets.data_ptr<int64_t>(), n_molecules, grad_q.data_ptr<T>(),
                                   grad_R.data_ptr<T>(), torch_parallel_for());
  };
  if (R.scalar_type() == at::kFloat) {
    run(float{});
  } else {
    run(double{});
  }
  return {grad_q, grad_R};
}

}  // namespace

// The schemas: the contract every backend (this file, csrc/register_cuda.cpp) implements. The kernel-choice
// arguments (cell_list_min_atoms, kernel_choice) have the defaults of csrc/cuda/kernel_plan.h; only CUDA uses them.
TORCH_LIBRARY(fastdipole, m) {
  const std::vector<at::Tag> tags = {at::Tag::pt2_compliant_tag};
  const std::string neighbor_pairs =
      "neighbor_pairs(Tensor R, Tensor offsets, float cutoff, int cell_list_min_atoms=" +
      std::to_string(cuda::kDefaultCellListMinAtoms) +
      ") -> (Tensor pair_first, Tensor pair_second, Tensor row_offsets)";
  m.def(neighbor_pairs.c_str(), tags);
  m.def("gaussian_envsum(Tensor z, Tensor r, Tensor pair_first, Tensor pair_second, Tensor row_offsets, "
        "Tensor mu, Tensor sigma, float cutoff, str kernel_choice=\"auto\") -> Tensor",
        tags);
  m.def("gaussian_envsum_backward(Tensor grad_env, Tensor z, Tensor r, Tensor pair_first, Tensor pair_second, "
        "Tensor row_offsets, Tensor mu, Tensor sigma, float cutoff, "
        "bool[4] output_mask=[True, True, True, True], str kernel_choice=\"auto\") -> "
        "(Tensor grad_z, Tensor grad_r, Tensor grad_mu, Tensor grad_sigma)",
        tags);
  m.def("segmented_dipole(Tensor q, Tensor R, Tensor offsets) -> Tensor", tags);
  m.def("segmented_dipole_backward(Tensor grad_mu, Tensor q, Tensor R, Tensor offsets) -> "
        "(Tensor grad_q, Tensor grad_R)",
        tags);
}

TORCH_LIBRARY_IMPL(fastdipole, CPU, m) {
  m.impl("neighbor_pairs", &neighbor_pairs_cpu);
  m.impl("gaussian_envsum", &gaussian_envsum_cpu);
  m.impl("gaussian_envsum_backward", &gaussian_envsum_backward_cpu);
  m.impl("segmented_dipole", &segmented_dipole_cpu);
  m.impl("segmented_dipole_backward", &segmented_dipole_backward_cpu);
}

}  // namespace fastdipole
