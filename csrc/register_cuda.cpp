// CUDA implementations of torch.ops.fastdipole.* (schemas in csrc/register_cpu.cpp). The only CUDA file
// that includes torch headers: it checks the inputs, allocates outputs and scratch with torch's caching
// allocator, and calls the torch-free launchers of csrc/cuda/ on the current stream. Every launcher returns
// its first CUDA error, which C10_CUDA_CHECK turns into a Python exception.
//
// Validation: shapes, dtypes and devices as on the CPU, with the same one-line messages. neighbor_pairs
// also checks its molecule offsets (it copies them to the host anyway). The other ops do not check index
// *values* (pair indices, CSR offsets) because that needs a device-to-host sync every call; their kernels
// bounds-check every read instead (csrc/cuda/launchers.h), so malformed indices give wrong numbers but
// never an out-of-bounds access. Validate once on the CPU op when in doubt.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <array>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include "cuda/launchers.h"
#include "op_checks.h"

namespace fastdipole {
namespace {

using at::Tensor;

// Scratch memory from torch's caching allocator, alive as long as this object (blocks freed while kernels
// still run are safe: the allocator reuses them only for later work on the same stream).
class TorchScratch final : public cuda::ScratchAllocator {
 public:
  explicit TorchScratch(c10::Device device) : device_(device) {}
  void* allocate(std::size_t bytes) override {
    const int64_t n = int64_t(bytes > 0 ? bytes : 1);
    buffers_.push_back(at::empty({n}, at::TensorOptions().dtype(at::kByte).device(device_)));
    return buffers_.back().data_ptr();
  }

 private:
  c10::Device device_;
  std::vector<Tensor> buffers_;
};

cudaStream_t current_stream(const Tensor& t) { return c10::cuda::getCurrentCUDAStream(t.device().index()).stream(); }

void check_cuda(const Tensor& t, const Tensor& ref, const char* op, const char* name) {
  TORCH_CHECK(t.device().is_cuda(), "fastdipole.", op, ": ", name, " must be a CUDA tensor, got ", t.device());
  TORCH_CHECK(t.device() == ref.device(), "fastdipole.", op, ": ", name, " is on ", t.device(),
              " but the other inputs are on ", ref.device());
}

using checks::check_index;

constexpr int64_t kMaxAtoms = std::numeric_limits<int32_t>::max();

// ---------------------------------------------------------------------------------------------------------
// neighbor_pairs
// ---------------------------------------------------------------------------------------------------------
// Molecules with at least cell_list_min_atoms atoms take the cell list (cuda/kernel_plan.h has the default).
std::tuple<Tensor, Tensor, Tensor> neighbor_pairs_cuda(const Tensor& R_in, const Tensor& offsets_in, double cutoff,
                                                       int64_t cell_list_min_atoms) {
  const char* op = "neighbor_pairs";
  check_cuda(R_in, R_in, op, "R");
  check_cuda(offsets_in, R_in, op, "offsets");
  checks::check_neighbor_inputs(R_in, cutoff, op);
  checks::check_cell_list_min_atoms(cell_list_min_atoms, op);
  check_index(offsets_in, op, "offsets");
  const c10::cuda::CUDAGuard guard(R_in.device());
  const Tensor R = R_in.contiguous();
  const Tensor offsets = offsets_in.contiguous();
  const int64_t n_atoms = R.size(0);
  TORCH_CHECK(n_atoms <= kMaxAtoms, "fastdipole.neighbor_pairs: at most ", kMaxAtoms, " atoms on CUDA, got ", n_atoms);
  const Tensor offsets_host = offsets.to(at::kCPU);  // the molecule sizes plan the launch; this syncs
  checks::check_csr_values(offsets_host, n_atoms, op, "offsets", "atoms (R.shape[0])");
  const int64_t n_molecules = offsets.numel() - 1;

  Tensor row_offsets = at::empty({n_atoms + 1}, R.options().dtype(at::kLong));
  Tensor first, second;
  TorchScratch scratch(R.device());
  const cudaStream_t stream = current_stream(R);
  auto run = [&](auto tag) {
    using T = decltype(tag);
    cuda::NeighborPairsLauncher<T> launcher(R.data_ptr<T>(), n_atoms, offsets.data_ptr<int64_t>(),
                                            offsets_host.data_ptr<int64_t>(), n_molecules, cutoff,
                                            cell_list_min_atoms, scratch, stream);
    int64_t n_pairs = 0;
    C10_CUDA_CHECK(launcher.count(row_offsets.data_ptr<int64_t>(), &n_pairs));
    first = at::empty({n_pairs}, row_offsets.options());
    second = at::empty({n_pairs}, row_offsets.options());
    C10_CUDA_CHECK(launcher.fill(first.data_ptr<int64_t>(), second.data_ptr<int64_t>()));
  };
  if (R.scalar_type() == at::kFloat) {
    run(float{});
  } else {
    run(double{});
  }
  return {first, second, row_offsets};
}

// ---------------------------------------------------------------------------------------------------------
// gaussian_envsum
// ---------------------------------------------------------------------------------------------------------
using checks::EnvsumInputs;

// Validates the inputs shared by the forward and the backward (index values are not read: that would sync).
EnvsumInputs check_envsum_inputs(const char* op, const Tensor& z, const Tensor& r, const Tensor& pair_first,
                                 const Tensor& pair_second, const Tensor& row_offsets, const Tensor& mu,
                                 const Tensor& sigma, double cutoff) {
  EnvsumInputs in = EnvsumInputs::checked(op, z, r, pair_first, pair_second, row_offsets, mu, sigma, cutoff,
                                          [&z, op](const Tensor& t, const char* name) { check_cuda(t, z, op, name); });
  const int64_t n_atoms = z.size(0);
  TORCH_CHECK(mu.numel() <= cuda::kMaxSensitivities, "fastdipole.", op, ": at most ", cuda::kMaxSensitivities,
              " sensitivities on CUDA, got ", mu.numel());
  TORCH_CHECK(n_atoms <= kMaxAtoms, "fastdipole.", op, ": at most ", kMaxAtoms, " atoms on CUDA, got ", n_atoms);
  return in;
}

template <typename T>
cuda::EnvsumArgs<T> envsum_args(const EnvsumInputs& in, double cutoff) {
  cuda::EnvsumArgs<T> a;
  a.z = in.z.data_ptr<T>();
  a.r = in.r.data_ptr<T>();
  a.pair_first = in.pair_first.data_ptr<int64_t>();
  a.pair_second = in.pair_second.data_ptr<int64_t>();
  a.row_offsets = in.row_offsets.data_ptr<int64_t>();
  a.mu = in.mu.data_ptr<T>();
  a.sigma = in.sigma.data_ptr<T>();
  a.n_atoms = in.z.size(0);
  a.n_features = in.z.size(1);
  a.n_pairs = in.r.numel();
  a.n_sens = in.mu.numel();
  a.cutoff = cutoff;
  return a;
}

// The kernels for this problem (cuda/kernel_plan.h), the `kernel` override honoured or refused with the reason.
cuda::EnvsumPlan envsum_plan(const char* op, const EnvsumInputs& in, c10::string_view kernel_choice) {
  const cuda::EnvsumKernelChoice choice = checks::check_envsum_kernel(kernel_choice, op);
  const cuda::EnvsumShape shape{int(in.z.element_size()), in.mu.numel(), in.z.size(1)};
  cuda::EnvsumPlan plan = cuda::plan_envsum(shape, choice);
  TORCH_CHECK(plan.ok(), "fastdipole.", op, ": kernel choice \"", std::string(kernel_choice),
              "\" cannot run this problem: ", plan.error);
  return plan;
}

Tensor gaussian_envsum_cuda(const Tensor& z, const Tensor& r, const Tensor& pair_first, const Tensor& pair_second,
                            const Tensor& row_offsets, const Tensor& mu, const Tensor& sigma, double cutoff,
                            c10::string_view kernel_choice) {
  const char* op = "gaussian_envsum";
  const EnvsumInputs in = check_envsum_inputs(op, z, r, pair_first, pair_second, row_offsets, mu, sigma, cutoff);
  const cuda::EnvsumPlan plan = envsum_plan(op, in, kernel_choice);
  const c10::cuda::CUDAGuard guard(in.z.device());
  Tensor env = at::empty({in.z.size(0), in.mu.numel(), in.z.size(1)}, in.z.options());
  const cudaStream_t stream = current_stream(in.z);
  if (in.z.scalar_type() == at::kFloat) {
    C10_CUDA_CHECK(
        cuda::gaussian_envsum_forward(envsum_args<float>(in, cutoff), plan, env.data_ptr<float>(), stream));
  } else {
    C10_CUDA_CHECK(
        cuda::gaussian_envsum_forward(envsum_args<double>(in, cutoff), plan, env.data_ptr<double>(), stream));
  }
  return env;
}

std::tuple<Tensor, Tensor, Tensor, Tensor> gaussian_envsum_backward_cuda(
    const Tensor& grad_env_in, const Tensor& z, const Tensor& r, const Tensor& pair_first, const Tensor& pair_second,
    const Tensor& row_offsets, const Tensor& mu, const Tensor& sigma, double cutoff, std::array<bool, 4> output_mask,
    c10::string_view kernel_choice) {
  const char* op = "gaussian_envsum_backward";
  const EnvsumInputs in = check_envsum_inputs(op, z, r, pair_first, pair_second, row_offsets, mu, sigma, cutoff);
  check_cuda(grad_env_in, in.z, op, "grad_env");
  checks::check_grad_env(op, grad_env_in, in.z, in.mu);
  const cuda::EnvsumPlan plan = envsum_plan(op, in, kernel_choice);
  const int64_t n_atoms = in.z.size(0);
  const c10::cuda::CUDAGuard guard(in.z.device());
  const Tensor grad_env = grad_env_in.contiguous();

  // Pairs grouped by sending atom for featsum (only when grad_z is wanted): a stable sort keeps ascending
  // pair index inside a group, and group j is [second_offsets[j], second_offsets[j + 1]).
  Tensor second_order, second_offsets;
  if (output_mask[0]) {
    const int64_t n_pairs = in.r.numel();
    TORCH_CHECK(n_pairs < int64_t(std::numeric_limits<int32_t>::max()), "fastdipole.", op,
                ": at most 2^31 - 1 pairs on CUDA, got ", n_pairs);
    second_order = at::empty({n_pairs}, in.pair_second.options());
    second_offsets = at::empty({n_atoms + 1}, in.pair_second.options());
    Tensor group_scratch = at::empty({int64_t(cuda::group_pairs_by_sender_scratch_bytes(n_pairs, n_atoms))},
                                     in.z.options().dtype(at::kByte));
    C10_CUDA_CHECK(cuda::group_pairs_by_sender(in.pair_second.data_ptr<int64_t>(), n_pairs, n_atoms,
                                               group_scratch.data_ptr(), second_order.data_ptr<int64_t>(),
                                               second_offsets.data_ptr<int64_t>(), current_stream(in.z)));
  }  // else the launcher never reads the grouping

  // Outputs left out of output_mask come back undefined (None in Python); the launcher skips their work.
  Tensor grad_z = output_mask[0] ? at::empty_like(in.z) : Tensor();
  Tensor grad_r = output_mask[1] ? at::empty_like(in.r) : Tensor();
  Tensor grad_mu = output_mask[2] ? at::empty_like(in.mu) : Tensor();
  Tensor grad_sigma = output_mask[3] ? at::empty_like(in.sigma) : Tensor();
  const cudaStream_t stream = current_stream(in.z);
  auto run = [&](auto tag) {
    using T = decltype(tag);
    auto ptr = [](Tensor& t) { return t.defined() ? t.data_ptr<T>() : nullptr; };
    auto index_ptr = [](const Tensor& t) { return t.defined() ? t.data_ptr<int64_t>() : nullptr; };
    const cuda::EnvsumArgs<T> args = envsum_args<T>(in, cutoff);
    const size_t bytes = cuda::gaussian_envsum_backward_scratch_bytes(args);
    Tensor scratch = at::empty({int64_t(bytes)}, in.z.options().dtype(at::kByte));
    C10_CUDA_CHECK(cuda::gaussian_envsum_backward(args, plan, grad_env.data_ptr<T>(), index_ptr(second_order),
                                                  index_ptr(second_offsets), scratch.data_ptr(), ptr(grad_z),
                                                  ptr(grad_r), ptr(grad_mu), ptr(grad_sigma), stream));
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
  check_cuda(R, R, op, "R");
  check_cuda(q, R, op, "q");
  check_cuda(offsets, R, op, "offsets");
  checks::check_dipole_inputs(op, q, R, offsets);
  TORCH_CHECK(offsets.numel() >= 1, "fastdipole.", op, ": offsets needs at least one entry (0)");
}

Tensor segmented_dipole_cuda(const Tensor& q_in, const Tensor& R_in, const Tensor& offsets_in) {
  const char* op = "segmented_dipole";
  check_dipole_inputs(op, q_in, R_in, offsets_in);
  const c10::cuda::CUDAGuard guard(R_in.device());
  const Tensor q = q_in.contiguous(), R = R_in.contiguous(), offsets = offsets_in.contiguous();
  const int64_t n_molecules = offsets.numel() - 1;
  Tensor mu = at::empty({n_molecules, 3}, R.options());
  const cudaStream_t stream = current_stream(R);
  auto run = [&](auto tag) {
    using T = decltype(tag);
    C10_CUDA_CHECK(cuda::segmented_dipole_forward(q.data_ptr<T>(), R.data_ptr<T>(), offsets.data_ptr<int64_t>(),
                                                  R.size(0), n_molecules, mu.data_ptr<T>(), stream));
  };
  if (R.scalar_type() == at::kFloat) {
    run(float{});
  } else {
    run(double{});
  }
  return mu;
}

std::tuple<Tensor, Tensor> segmented_dipole_backward_cuda(const Tensor& grad_mu_in, const Tensor& q_in,
                                                          const Tensor& R_in, const Tensor& offsets_in) {
  const char* op = "segmented_dipole_backward";
  check_dipole_inputs(op, q_in, R_in, offsets_in);
  check_cuda(grad_mu_in, R_in, op, "grad_mu");
  const int64_t n_molecules = offsets_in.numel() - 1;
  checks::check_grad_dipole(op, grad_mu_in, R_in, n_molecules);
  const c10::cuda::CUDAGuard guard(R_in.device());
  const Tensor q = q_in.contiguous(), R = R_in.contiguous(), offsets = offsets_in.contiguous();
  const Tensor grad_mu = grad_mu_in.contiguous();
  Tensor grad_q = at::empty_like(q);
  Tensor grad_R = at::empty_like(R);
  const cudaStream_t stream = current_stream(R);
  auto run = [&](auto tag) {
    using T = decltype(tag);
    C10_CUDA_CHECK(cuda::segmented_dipole_backward(grad_mu.data_ptr<T>(), q.data_ptr<T>(), R.data_ptr<T>(),
                                                   offsets.data_ptr<int64_t>(), R.size(0), n_molecules,
                                                   grad_q.data_ptr<T>(), grad_R.data_ptr<T>(), stream));
  };
  if (R.scalar_type() == at::kFloat) {
    run(float{});
  } else {
    run(double{});
  }
  return {grad_q, grad_R};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastdipole, CUDA, m) {
  m.impl("neighbor_pairs", &neighbor_pairs_cuda);
  m.impl("gaussian_envsum", &gaussian_envsum_cuda);
  m.impl("gaussian_envsum_backward", &gaussian_envsum_backward_cuda);
  m.impl("segmented_dipole", &segmented_dipole_cuda);
  m.impl("segmented_dipole_backward", &segmented_dipole_backward_cuda);
}

}  // namespace fastdipole
