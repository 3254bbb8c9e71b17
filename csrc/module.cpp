// fastdipole._C: importing it loads the operator registrations of torch.ops.fastdipole (register_cpu.cpp,
// and register_cuda.cpp in CUDA builds). No Python function here takes tensors, so the module does not
// link libtorch_python (notes/build.md, gotcha 9).
#include <pybind11/pybind11.h>

#ifndef FASTDIPOLE_WITH_CUDA
#define FASTDIPOLE_WITH_CUDA 0
#endif

PYBIND11_MODULE(_C, m) {
  m.doc() = "fastdipole compiled kernels; the operators live in torch.ops.fastdipole";
  m.attr("with_cuda") = pybind11::bool_(FASTDIPOLE_WITH_CUDA != 0);
}
