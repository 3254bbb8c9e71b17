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

#include <cmath>
#include <tuple>

#include "cpu/dipole.h"
#include "cpu/envsum.h"
#include "cpu/neighbors.h"

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

void check_float(const Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, "fastdipole.", op, ": ", name,
              " must be float32 or float64, got ", t.scalar_type());
}

void check_same_dtype(const Tensor& t, const Tensor& ref, const char* op, const char* name, const char* ref_name) {
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), "fastdipole.", op, ": ", name, " (", t.scalar_type(),
              ") must have the dtype of ", ref_name, " (", ref.scalar_type(), ")");
}

void check_index(const Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(t.scalar_type() == at::kLong, "fastdipole.", op, ": ", name, " must be int64, got ", t.scalar_type());
  TORCH_CHECK(t.dim() == 1, "fastdipole.", op, ": ", name, " must be 1-D, got shape ", t.sizes());
}

// CSR offsets: 1-D int64, offsets[0] = 0, non-decreasing, offsets[-1] = total.
void check_csr(const Tensor& offsets, int64_t total, const char* op, const char* name, const char* what) {
  check_index(offsets, op, name);
  TORCH_CHECK(offsets.numel() >= 1, "fastdipole.", op, ": ", name, " needs at least one entry (0)");
  const int64_t* o = offsets.data_ptr<int64_t>();
  const int64_t n = offsets.numel();
  TORCH_CHECK(o[0] == 0, "fastdipole.", op, ": ", name, "[0] must be 0, got ", o[0]);
  for (int64_t k = 0; k + 1 < n; ++k) {
    TORCH_CHECK(o[k + 1] >= o[k], "fastdipole.", op, ": ", name, " must be non-decreasing, but ", name, "[", k + 1,
                "] = ", o[k + 1], " < ", name, "[", k, "] = ", o[k]);
  }
  TORCH_CHECK(o[n - 1] == total, "fastdipole.", op, ": ", name, "[-1] = ", o[n - 1], " must equal the number of ",
              what, " (", total, ")");
}

void check_cutoff(double cutoff, const char* op) {
  TORCH_CHECK(std::isfinite(cutoff) && cutoff > 0.0, "fastdipole.", op, ": cutoff must be a positive finite number "
              "(Angstrom), got ", cutoff);
}

// ---------------------------------------------------------------------------------------------------------
// neighbor_pairs
// ---------------------------------------------------------------------------------------------------------
std::tuple<Tensor, Tensor, Tensor> neighbor_pairs_cpu(const Tensor& R_in, const Tensor& offsets_in, double cutoff) {
  const char* op = "neighbor_pairs";
  check_cpu(R_in, op, "R");
  check_cpu(offsets_in, op, "offsets");
  check_float(R_in, op, "R");
  TORCH_CHECK(R_in.dim() == 2 && R_in.size(1) == 3, "fastdipole.neighbor_pairs: R must have shape (n_atoms, 3), got ",
              R_in.sizes());
  check_cutoff(cutoff, op);
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
struct EnvsumInputs {
  Tensor z, r, pair_first, pair_second, row_offsets, mu, sigma;
};

// Validates the inputs shared by the forward and the backward; returns contiguous copies where needed.
EnvsumInputs check_envsum_inputs(const char* op, const Tensor& z, const Tensor& r, const Tensor& pair_first,
                                 const Tensor& pair_second, const Tensor& row_offsets, const Tensor& mu,
                                 const Tensor& sigma, double cutoff) {
  const std::pair<const Tensor*, const char*> all[] = {{&z, "z"},           {&r, "r"},
                                                       {&pair_first, "pair_first"},
                                                       {&pair_second, "pair_second"},
                                                       {&row_offsets, "row_offsets"},
                                                       {&mu, "mu"},
                                                       {&sigma, "sigma"}};
  for (const auto& [t, name] : all) check_cpu(*t, op, name);
  check_float(z, op, "z");
  TORCH_CHECK(z.dim() == 2, "fastdipole.", op, ": z must have shape (n_atoms, n_features), got ", z.sizes());
  check_same_dtype(r, z, op, "r", "z");
  check_same_dtype(mu, z, op, "mu", "z");
  check_same_dtype(sigma, z, op, "sigma", "z");
  TORCH_CHECK(r.dim() == 1, "fastdipole.", op, ": r must be 1-D (n_pairs,), got shape ", r.sizes());
  TORCH_CHECK(mu.dim() == 1 && sigma.dim() == 1 && mu.numel() == sigma.numel(), "fastdipole.", op,
              ": mu and sigma must be 1-D of the same length (n_sensitivities,), got ", mu.sizes(), " and ",
              sigma.sizes());
  check_index(pair_first, op, "pair_first");
  check_index(pair_second, op, "pair_second");
  const int64_t n_atoms = z.size(0), n_pairs = r.numel();
  TORCH_CHECK(pair_first.numel() == n_pairs && pair_second.numel() == n_pairs, "fastdipole.", op,
              ": r, pair_first and pair_second must have the same length, got ", n_pairs, ", ", pair_first.numel(),
              " and ", pair_second.numel());
  check_cutoff(cutoff, op);

  EnvsumInputs in{z.contiguous(),        r.contiguous(),  pair_first.contiguous(), pair_second.contiguous(),
                  row_offsets.contiguous(), mu.contiguous(), sigma.contiguous()};
  check_csr(in.row_offsets, n_pairs, op, "row_offsets", "pairs");
  TORCH_CHECK(in.row_offsets.numel() == n_atoms + 1, "fastdipole.", op, ": row_offsets must have n_atoms + 1 = ",
              n_atoms + 1, " entries, got ", in.row_offsets.numel());
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

Tensor gaussian_envsum_cpu(const Tensor& z, const Tensor& r, const Tensor& pair_first, const Tensor& pair_second,
                           const Tensor& row_offsets, const Tensor& mu, const Tensor& sigma, double cutoff) {
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

std::tuple<Tensor, Tensor, Tensor, Tensor> gaussian_envsum_backward_cpu(
    const Tensor& grad_env_in, const Tensor& z, const Tensor& r, const Tensor& pair_first, const Tensor& pair_second,
    const Tensor& row_offsets, const Tensor& mu, const Tensor& sigma, double cutoff) {
  const char* op = "gaussian_envsum_backward";
  const EnvsumInputs in = check_envsum_inputs(op, z, r, pair_first, pair_second, row_offsets, mu, sigma, cutoff);
  check_cpu(grad_env_in, op, "grad_env");
  check_same_dtype(grad_env_in, z, op, "grad_env", "z");
  TORCH_CHECK(grad_env_in.dim() == 3 && grad_env_in.size(0) == in.z.size(0) && grad_env_in.size(1) == in.mu.numel() &&
                  grad_env_in.size(2) == in.z.size(1),
              "fastdipole.", op, ": grad_env must have shape (n_atoms, n_sensitivities, n_features) = (",
              in.z.size(0), ", ", in.mu.numel(), ", ", in.z.size(1), "), got ", grad_env_in.sizes());
  const Tensor grad_env = grad_env_in.contiguous();
  Tensor grad_z = at::empty_like(in.z);
  Tensor grad_r = at::empty_like(in.r);
  Tensor grad_mu = at::empty_like(in.mu);
  Tensor grad_sigma = at::empty_like(in.sigma);
  auto run = [&](auto tag) {
    using T = decltype(tag);
    cpu::gaussian_envsum_backward(envsum_problem<T>(in, cutoff), grad_env.data_ptr<T>(), grad_z.data_ptr<T>(),
                                  grad_r.data_ptr<T>(), grad_mu.data_ptr<T>(), grad_sigma.data_ptr<T>(),
                                  torch_parallel_for());
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
  check_float(R, op, "R");
  check_same_dtype(q, R, op, "q", "R");
  TORCH_CHECK(R.dim() == 2 && R.size(1) == 3, "fastdipole.", op, ": R must have shape (n_atoms, 3), got ", R.sizes());
  TORCH_CHECK(q.dim() == 1 && q.numel() == R.size(0), "fastdipole.", op, ": q must have shape (n_atoms,) = (",
              R.size(0), ",), got ", q.sizes());
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
  check_same_dtype(grad_mu_in, R_in, op, "grad_mu", "R");
  const Tensor q = q_in.contiguous(), R = R_in.contiguous(), offsets = offsets_in.contiguous();
  check_csr(offsets, R.size(0), op, "offsets", "atoms (R.shape[0])");
  const int64_t n_molecules = offsets.numel() - 1;
  TORCH_CHECK(grad_mu_in.dim() == 2 && grad_mu_in.size(0) == n_molecules && grad_mu_in.size(1) == 3, "fastdipole.",
              op, ": grad_mu must have shape (n_molecules, 3) = (", n_molecules, ", 3), got ", grad_mu_in.sizes());
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

// The schemas: the contract every backend (this file, csrc/register_cuda.cpp) implements.
TORCH_LIBRARY(fastdipole, m) {
  const std::vector<at::Tag> tags = {at::Tag::pt2_compliant_tag};
  m.def("neighbor_pairs(Tensor R, Tensor offsets, float cutoff) -> "
        "(Tensor pair_first, Tensor pair_second, Tensor row_offsets)",
        tags);
  m.def("gaussian_envsum(Tensor z, Tensor r, Tensor pair_first, Tensor pair_second, Tensor row_offsets, "
        "Tensor mu, Tensor sigma, float cutoff) -> Tensor",
        tags);
  m.def("gaussian_envsum_backward(Tensor grad_env, Tensor z, Tensor r, Tensor pair_first, Tensor pair_second, "
        "Tensor row_offsets, Tensor mu, Tensor sigma, float cutoff) -> "
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
