// Device-independent input checks of the torch.ops.fastdipole operators, shared by csrc/register_cpu.cpp and
// csrc/register_cuda.cpp so both backends reject bad inputs with the same one-line messages (tests match on
// them). Only shapes, dtypes and scalar arguments here; device checks stay in each registration file.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include "cuda/kernel_plan.h"  // torch-free and CUDA-free: the kernel-choice arguments' syntax and defaults

namespace fastdipole::checks {

inline void check_float(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, "fastdipole.", op, ": ", name,
              " must be float32 or float64, got ", t.scalar_type());
}

inline void check_same_dtype(const at::Tensor& t, const at::Tensor& ref, const char* op, const char* name,
                             const char* ref_name) {
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), "fastdipole.", op, ": ", name, " (", t.scalar_type(),
              ") must have the dtype of ", ref_name, " (", ref.scalar_type(), ")");
}

inline void check_index(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(t.scalar_type() == at::kLong, "fastdipole.", op, ": ", name, " must be int64, got ", t.scalar_type());
  TORCH_CHECK(t.dim() == 1, "fastdipole.", op, ": ", name, " must be 1-D, got shape ", t.sizes());
}

inline void check_cutoff(double cutoff, const char* op) {
  TORCH_CHECK(std::isfinite(cutoff) && cutoff > 0.0, "fastdipole.", op, ": cutoff must be a positive finite number "
              "(Angstrom), got ", cutoff);
}

// CSR offsets held on the host (contiguous int64): offsets[0] = 0, non-decreasing, offsets[-1] = total.
inline void check_csr_values(const at::Tensor& offsets_host, int64_t total, const char* op, const char* name,
                             const char* what) {
  TORCH_CHECK(offsets_host.numel() >= 1, "fastdipole.", op, ": ", name, " needs at least one entry (0)");
  const int64_t* o = offsets_host.data_ptr<int64_t>();
  const int64_t n = offsets_host.numel();
  TORCH_CHECK(o[0] == 0, "fastdipole.", op, ": ", name, "[0] must be 0, got ", o[0]);
  for (int64_t k = 0; k + 1 < n; ++k) {
    TORCH_CHECK(o[k + 1] >= o[k], "fastdipole.", op, ": ", name, " must be non-decreasing, but ", name, "[", k + 1,
                "] = ", o[k + 1], " < ", name, "[", k, "] = ", o[k]);
  }
  TORCH_CHECK(o[n - 1] == total, "fastdipole.", op, ": ", name, "[-1] = ", o[n - 1], " must equal the number of ",
              what, " (", total, ")");
}

// neighbor_pairs' cell_list_min_atoms: a molecule size (the CPU op checks it too, and has no use for it).
inline void check_cell_list_min_atoms(int64_t cell_list_min_atoms, const char* op) {
  TORCH_CHECK(cell_list_min_atoms >= 1, "fastdipole.", op, ": cell_list_min_atoms must be at least 1 (atoms), got ",
              cell_list_min_atoms);
}

// gaussian_envsum(_backward)'s kernel_choice: the CUDA kernel override (cuda/kernel_plan.h); both backends check
// its syntax, only CUDA has kernels to choose from.
inline cuda::EnvsumKernelChoice check_envsum_kernel(std::string_view kernel, const char* op) {
  cuda::EnvsumKernelChoice choice;
  TORCH_CHECK(cuda::parse_envsum_kernel(kernel, &choice), "fastdipole.", op, ": kernel choice must be ",
              cuda::kEnvsumKernelSyntax, ", got \"", std::string(kernel), "\"");
  return choice;
}

// neighbor_pairs: R (n_atoms, 3) float, positive finite cutoff.
inline void check_neighbor_inputs(const at::Tensor& R, double cutoff, const char* op) {
  check_float(R, op, "R");
  TORCH_CHECK(R.dim() == 2 && R.size(1) == 3, "fastdipole.", op, ": R must have shape (n_atoms, 3), got ", R.sizes());
  check_cutoff(cutoff, op);
}

// gaussian_envsum(_backward): z (n_atoms, n_features) float; r, mu, sigma of z's dtype; r (n_pairs,); mu and
// sigma (n_sens,); pair_first, pair_second, row_offsets 1-D int64, the pair arrays of r's length; cutoff.
// Index values and row_offsets' length are checked by each backend (the CPU op reads them; CUDA cannot
// without a sync).
inline void check_envsum_inputs(const char* op, const at::Tensor& z, const at::Tensor& r,
                                const at::Tensor& pair_first, const at::Tensor& pair_second,
                                const at::Tensor& row_offsets, const at::Tensor& mu, const at::Tensor& sigma,
                                double cutoff) {
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
  check_index(row_offsets, op, "row_offsets");
  const int64_t n_pairs = r.numel();
  TORCH_CHECK(pair_first.numel() == n_pairs && pair_second.numel() == n_pairs, "fastdipole.", op,
              ": r, pair_first and pair_second must have the same length, got ", n_pairs, ", ", pair_first.numel(),
              " and ", pair_second.numel());
  check_cutoff(cutoff, op);
}

// row_offsets: one entry per atom plus one.
inline void check_row_offsets_length(const at::Tensor& row_offsets, int64_t n_atoms, const char* op) {
  TORCH_CHECK(row_offsets.numel() == n_atoms + 1, "fastdipole.", op, ": row_offsets must have n_atoms + 1 = ",
              n_atoms + 1, " entries, got ", row_offsets.numel());
}

// The envsum inputs as both backends hand them to their kernels: checked, then made contiguous.
struct EnvsumInputs {
  at::Tensor z, r, pair_first, pair_second, row_offsets, mu, sigma;

  // Runs device_check(tensor, name) on every input, then the device-independent checks above.
  template <typename DeviceCheck>
  static EnvsumInputs checked(const char* op, const at::Tensor& z, const at::Tensor& r,
                              const at::Tensor& pair_first, const at::Tensor& pair_second,
                              const at::Tensor& row_offsets, const at::Tensor& mu, const at::Tensor& sigma,
                              double cutoff, DeviceCheck device_check) {
    const std::pair<const at::Tensor*, const char*> all[] = {
        {&z, "z"}, {&r, "r"}, {&pair_first, "pair_first"}, {&pair_second, "pair_second"},
        {&row_offsets, "row_offsets"}, {&mu, "mu"}, {&sigma, "sigma"}};
    for (const auto& [t, name] : all) device_check(*t, name);
    check_envsum_inputs(op, z, r, pair_first, pair_second, row_offsets, mu, sigma, cutoff);
    check_row_offsets_length(row_offsets, z.size(0), op);
    return {z.contiguous(),           r.contiguous(),  pair_first.contiguous(), pair_second.contiguous(),
            row_offsets.contiguous(), mu.contiguous(), sigma.contiguous()};
  }
};

// gaussian_envsum_backward's grad_env: z's dtype, shape (n_atoms, n_sensitivities, n_features).
inline void check_grad_env(const char* op, const at::Tensor& grad_env, const at::Tensor& z, const at::Tensor& mu) {
  check_same_dtype(grad_env, z, op, "grad_env", "z");
  TORCH_CHECK(grad_env.dim() == 3 && grad_env.size(0) == z.size(0) && grad_env.size(1) == mu.numel() &&
                  grad_env.size(2) == z.size(1),
              "fastdipole.", op, ": grad_env must have shape (n_atoms, n_sensitivities, n_features) = (", z.size(0),
              ", ", mu.numel(), ", ", z.size(1), "), got ", grad_env.sizes());
}

// segmented_dipole(_backward): R (n_atoms, 3) float, q (n_atoms,) of R's dtype, offsets 1-D int64.
inline void check_dipole_inputs(const char* op, const at::Tensor& q, const at::Tensor& R, const at::Tensor& offsets) {
  check_float(R, op, "R");
  check_same_dtype(q, R, op, "q", "R");
  TORCH_CHECK(R.dim() == 2 && R.size(1) == 3, "fastdipole.", op, ": R must have shape (n_atoms, 3), got ", R.sizes());
  TORCH_CHECK(q.dim() == 1 && q.numel() == R.size(0), "fastdipole.", op, ": q must have shape (n_atoms,) = (",
              R.size(0), ",), got ", q.sizes());
  check_index(offsets, op, "offsets");
}

// segmented_dipole_backward's grad_mu: R's dtype, shape (n_molecules, 3).
inline void check_grad_dipole(const char* op, const at::Tensor& grad_mu, const at::Tensor& R, int64_t n_molecules) {
  check_same_dtype(grad_mu, R, op, "grad_mu", "R");
  TORCH_CHECK(grad_mu.dim() == 2 && grad_mu.size(0) == n_molecules && grad_mu.size(1) == 3, "fastdipole.", op,
              ": grad_mu must have shape (n_molecules, 3) = (", n_molecules, ", 3), got ", grad_mu.sizes());
}

}  // namespace fastdipole::checks
