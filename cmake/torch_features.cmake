# What the LibTorch found by find_package(Torch) offers, as compile definitions for rala_experiments
# (RALA_TORCH_FEATURE_DEFINITIONS):
#   RALA_WITH_CUDA    the LibTorch has CUDA (a torch_cuda target): --device cuda, CUDA device queries
#   RALA_DISTRIBUTED  c10d's ProcessGroupGloo compiles (USE_C10D_GLOO and the Gloo headers: Debian's libgloo-dev)
#   RALA_WITH_NCCL    c10d's ProcessGroupNCCL compiles (a CUDA LibTorch with USE_C10D_NCCL, and nccl.h; give its folder
#                     with -DRALA_NCCL_INCLUDE_DIR=… when it is not on the compiler's path, e.g. pip's nvidia/nccl/include)
# Each is probed by compiling a two-line program against torch, so a LibTorch without them still builds: the
# features are then off and the code says so in one line when asked for them.
include(CheckCXXSourceCompiles)
set(RALA_TORCH_FEATURE_DEFINITIONS "")
set(RALA_NCCL_INCLUDE_DIR "" CACHE PATH "Folder holding nccl.h, if the compiler does not find it")

if(TARGET torch_cuda OR TORCH_CUDA_LIBRARIES)
  set(RALA_WITH_CUDA ON)
  list(APPEND RALA_TORCH_FEATURE_DEFINITIONS RALA_WITH_CUDA)
else()
  set(RALA_WITH_CUDA OFF)
endif()

set(RALA_HAVE_GLOO OFF)
set(RALA_HAVE_NCCL OFF)
if(RALA_DISTRIBUTED)
  set(CMAKE_REQUIRED_LIBRARIES ${TORCH_LIBRARIES})  # brings torch's include dirs and USE_C10D_* definitions
  set(CMAKE_REQUIRED_QUIET ON)
  set(CMAKE_TRY_COMPILE_TARGET_TYPE STATIC_LIBRARY)  # compile only: the symbols are in libtorch_cpu
  check_cxx_source_compiles("
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
int probe() { return sizeof(c10d::ProcessGroupGloo) > 0 && sizeof(c10d::TCPStore) > 0; }" RALA_C10D_GLOO_COMPILES)
  if(RALA_C10D_GLOO_COMPILES)
    set(RALA_HAVE_GLOO ON)
    list(APPEND RALA_TORCH_FEATURE_DEFINITIONS RALA_DISTRIBUTED)
  endif()
  if(RALA_WITH_CUDA AND RALA_HAVE_GLOO)
    if(RALA_NCCL_INCLUDE_DIR)
      set(CMAKE_REQUIRED_INCLUDES ${RALA_NCCL_INCLUDE_DIR})
    endif()
    check_cxx_source_compiles("
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
int probe() { return sizeof(c10d::ProcessGroupNCCL) > 0; }" RALA_C10D_NCCL_COMPILES)
    unset(CMAKE_REQUIRED_INCLUDES)
    if(RALA_C10D_NCCL_COMPILES)
      set(RALA_HAVE_NCCL ON)
      list(APPEND RALA_TORCH_FEATURE_DEFINITIONS RALA_WITH_NCCL)
    endif()
  endif()
  unset(CMAKE_REQUIRED_LIBRARIES)
  unset(CMAKE_REQUIRED_QUIET)
  unset(CMAKE_TRY_COMPILE_TARGET_TYPE)
endif()
message(STATUS "RALA Lab: LibTorch ${Torch_VERSION} — CUDA ${RALA_WITH_CUDA}, c10d Gloo ${RALA_HAVE_GLOO}, "
               "NCCL ${RALA_HAVE_NCCL}")
if(RALA_DISTRIBUTED AND NOT RALA_HAVE_GLOO)
  message(STATUS "RALA Lab: multi-process training is off: <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp> does not "
                 "compile (install libgloo-dev, or use a LibTorch built with USE_C10D_GLOO)")
endif()
