// fastdipole._C: importing it loads the operator registrations of torch.ops.fastdipole (register_cpu.cpp,
// and register_cuda.cpp in CUDA builds). No Python function here takes tensors, so the module does not
// link libtorch_python (torch's C++ libraries are enough). It also answers which CUDA kernels a problem gets
// (cuda/kernel_plan.h, plain C++: the same answer in builds without CUDA), for fastdipole/ops/kernels.py.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "cuda/kernel_plan.h"

#ifndef FASTDIPOLE_WITH_CUDA
#define FASTDIPOLE_WITH_CUDA 0
#endif

namespace {

namespace py = pybind11;
namespace fc = fastdipole::cuda;

// The plan of one envsum problem as a dict (forward, backward: kernel names; the widths; error: "" or why the
// asked-for kernel cannot run it). ValueError when `kernel` is not of the override's syntax.
py::dict envsum_plan(int element_bytes, int64_t n_sens, int64_t n_features, const std::string& kernel) {
  if (element_bytes != 4 && element_bytes != 8) throw py::value_error("element_bytes must be 4 or 8");
  fc::EnvsumKernelChoice choice;
  if (!fc::parse_envsum_kernel(kernel, &choice)) {
    throw py::value_error(std::string("kernel choice must be ") + fc::kEnvsumKernelSyntax + ", got \"" + kernel +
                          "\"");
  }
  const fc::EnvsumPlan plan = fc::plan_envsum(fc::EnvsumShape{element_bytes, n_sens, n_features}, choice);
  py::dict out;
  out["forward"] = fc::envsum_kernel_name(plan.forward);
  out["backward"] = fc::envsum_kernel_name(plan.backward);
  out["lanes_slots"] = plan.lanes_slots;
  out["forward_columns"] = plan.forward_columns;
  out["backward_columns"] = plan.backward_columns;
  out["block_group"] = plan.block_group;
  out["featsum_columns"] = plan.featsum_columns;
  out["error"] = plan.error;
  return out;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "fastdipole compiled kernels; the operators live in torch.ops.fastdipole";
  m.attr("with_cuda") = pybind11::bool_(FASTDIPOLE_WITH_CUDA != 0);
  m.attr("default_cell_list_min_atoms") = fc::kDefaultCellListMinAtoms;
  m.def("envsum_plan", &envsum_plan, py::arg("element_bytes"), py::arg("n_sens"), py::arg("n_features"),
        py::arg("kernel") = "auto",
        "The CUDA envsum kernels for one problem (csrc/cuda/kernel_plan.h), as a dict; error says why a forced "
        "kernel cannot run it.");
}
