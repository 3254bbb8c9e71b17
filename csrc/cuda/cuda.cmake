# CUDA part of fastdipole._C, included by CMakeLists.txt only for a CUDA build of torch with nvcc present.
#
#   fastdipole_cuda_kernels   csrc/cuda/*.cu: torch-free kernels + launchers (nvcc, C++17, seconds to build)
#   _C += csrc/register_cuda.cpp   the torch-facing registration (host compiler; c10_cuda + cudart)
#
# Architectures: -DFASTDIPOLE_CUDA_ARCHITECTURES="80-real;90-real" (CMake's format) if given, else
# TORCH_CUDA_ARCH_LIST (env, torch's format: "8.0;9.0", "8.0 9.0+PTX"), else sm_80 and sm_90 cubins plus
# compute_90 PTX (runs on A100/A10/L4/RTX 30-40 (sm_8x), H100/H200, and JIT-compiles on newer GPUs).
# Torch's own CMake ignores CMAKE_CUDA_ARCHITECTURES, but torch's CMake is not used here (CMakeLists.txt asks
# the build's Python interpreter for torch's paths instead).

if(NOT FASTDIPOLE_CUDA_ARCHITECTURES)
  if(DEFINED ENV{TORCH_CUDA_ARCH_LIST} AND NOT "$ENV{TORCH_CUDA_ARCH_LIST}" STREQUAL "")
    string(REPLACE " " ";" _fd_arch_in "$ENV{TORCH_CUDA_ARCH_LIST}")
    set(_fd_archs "")
    foreach(_fd_a IN LISTS _fd_arch_in)
      if(_fd_a STREQUAL "")
        continue()
      endif()
      set(_fd_ptx OFF)
      if(_fd_a MATCHES "\\+PTX$")
        set(_fd_ptx ON)
        string(REGEX REPLACE "\\+PTX$" "" _fd_a "${_fd_a}")
      endif()
      string(REPLACE "." "" _fd_num "${_fd_a}")
      if(NOT _fd_num MATCHES "^[0-9]+[a-z]?$")
        message(FATAL_ERROR "fastdipole: cannot read TORCH_CUDA_ARCH_LIST entry '${_fd_a}'")
      endif()
      list(APPEND _fd_archs "${_fd_num}-real")
      if(_fd_ptx)
        list(APPEND _fd_archs "${_fd_num}-virtual")
      endif()
    endforeach()
    set(FASTDIPOLE_CUDA_ARCHITECTURES "${_fd_archs}")
  else()
    set(FASTDIPOLE_CUDA_ARCHITECTURES "80-real;90-real;90-virtual")
  endif()
endif()
# Set before enable_language so CMake does not probe a default architecture (nvcc 13 rejects old ones).
set(CMAKE_CUDA_ARCHITECTURES "${FASTDIPOLE_CUDA_ARCHITECTURES}")
enable_language(CUDA)
find_package(CUDAToolkit REQUIRED)
message(STATUS "fastdipole: CUDA ${CUDAToolkit_VERSION}, architectures ${FASTDIPOLE_CUDA_ARCHITECTURES}")

add_library(fastdipole_cuda_kernels STATIC
  csrc/cuda/neighbors.cu
  csrc/cuda/envsum.cu
  csrc/cuda/pair_groups.cu
  csrc/cuda/dipole.cu)
target_include_directories(fastdipole_cuda_kernels PUBLIC "${CMAKE_CURRENT_SOURCE_DIR}/csrc")
set_target_properties(fastdipole_cuda_kernels PROPERTIES
  CUDA_STANDARD 17
  CUDA_STANDARD_REQUIRED ON
  CUDA_EXTENSIONS OFF
  CUDA_ARCHITECTURES "${FASTDIPOLE_CUDA_ARCHITECTURES}"
  CUDA_RUNTIME_LIBRARY Shared
  POSITION_INDEPENDENT_CODE ON)
target_compile_options(fastdipole_cuda_kernels PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:-O3 -lineinfo>)
target_link_libraries(fastdipole_cuda_kernels PUBLIC CUDA::cudart)

# libc10_cuda (getCurrentCUDAStream, C10_CUDA_CHECK) from torch's library directory.
find_library(FASTDIPOLE_LIB_c10_cuda NAMES c10_cuda PATHS ${FASTDIPOLE_TORCH_LIBRARY_DIRS} NO_DEFAULT_PATH)
if(NOT FASTDIPOLE_LIB_c10_cuda)
  message(FATAL_ERROR "fastdipole: libc10_cuda not found in ${FASTDIPOLE_TORCH_LIBRARY_DIRS}")
endif()

target_sources(_C PRIVATE csrc/register_cuda.cpp)
set_target_properties(_C PROPERTIES CUDA_RUNTIME_LIBRARY Shared)
target_link_libraries(_C PRIVATE fastdipole_cuda_kernels "${FASTDIPOLE_LIB_c10_cuda}" CUDA::cudart)

# FASTDIPOLE_WITH_CUDA=1 replaces the =0 that CMakeLists.txt sets (module.cpp reports it as _C.with_cuda).
get_target_property(_fd_defs _C COMPILE_DEFINITIONS)
if(_fd_defs)
  list(REMOVE_ITEM _fd_defs FASTDIPOLE_WITH_CUDA=0)
else()
  set(_fd_defs "")
endif()
list(APPEND _fd_defs FASTDIPOLE_WITH_CUDA=1)
set_target_properties(_C PROPERTIES COMPILE_DEFINITIONS "${_fd_defs}")
