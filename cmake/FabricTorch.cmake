# Finds LibTorch inside the PyPI torch wheel pinned in scripts/python-requirements.txt.
#
# The wheel ships the C++ headers, the shared libraries and share/cmake/Torch. We ask the
# Python that has it (FABRIC_PYTHON, set by scripts/bootstrap's environment) where it is,
# and refuse a torch whose version differs from the pin: binaries must match the libtorch
# they will load on the GPU machines.
set(FABRIC_PYTHON "" CACHE STRING "Python interpreter that has the pinned torch wheel")
if(NOT FABRIC_PYTHON)
  set(FABRIC_PYTHON python3)
endif()

file(STRINGS "${CMAKE_SOURCE_DIR}/scripts/python-requirements.txt" _pin REGEX "^torch==")
string(REPLACE "torch==" "" FABRIC_TORCH_VERSION "${_pin}")

if(NOT Torch_DIR)
  execute_process(
    COMMAND ${FABRIC_PYTHON} -c "import torch.utils; print(torch.utils.cmake_prefix_path)"
    OUTPUT_VARIABLE _torch_prefix OUTPUT_STRIP_TRAILING_WHITESPACE
    RESULT_VARIABLE _torch_rc)
  if(NOT _torch_rc EQUAL 0)
    message(FATAL_ERROR "${FABRIC_PYTHON} cannot import torch. Run scripts/bootstrap, "
                        "or pass -DFABRIC_PYTHON=<python with torch==${FABRIC_TORCH_VERSION}>.")
  endif()
  list(APPEND CMAKE_PREFIX_PATH "${_torch_prefix}")
endif()

# The wheel is a CUDA build; its CMake config looks for the CUDA toolkit and cuDNN/NVTX.
# These only matter for the CUDA paths, which link but never run on the CPU machines.
set(CAFFE2_USE_CUDNN OFF CACHE BOOL "")
# Without an explicit list, Caffe2's CMake compiles and runs a probe for the installed GPUs,
# which fails on machines without one. We compile no CUDA kernels; Hopper is the GPU we run on.
if(NOT DEFINED ENV{TORCH_CUDA_ARCH_LIST} AND NOT TORCH_CUDA_ARCH_LIST)
  set(TORCH_CUDA_ARCH_LIST "9.0")
endif()
find_package(Torch REQUIRED)

if(NOT Torch_VERSION VERSION_EQUAL FABRIC_TORCH_VERSION)
  message(FATAL_ERROR "Found torch ${Torch_VERSION} at ${Torch_DIR}, but "
                      "scripts/python-requirements.txt pins ${FABRIC_TORCH_VERSION}. Run scripts/bootstrap.")
endif()
message(STATUS "LibTorch ${Torch_VERSION} from ${Torch_DIR}")
