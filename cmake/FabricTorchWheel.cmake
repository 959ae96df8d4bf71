# fabric_torch_prefix_from_python(PYTHON OUT_VAR): where the torch wheel that PYTHON imports
# keeps its CMake package (torch.utils.cmake_prefix_path), or OUT_VAR-NOTFOUND.
#
# Shared by the build (FabricTorch.cmake) and the installed package (FabricConfig.cmake), so
# that a LibTorch from PyPI is found the same way in both.
function(fabric_torch_prefix_from_python python out_var)
  execute_process(
    COMMAND ${python} -c "import torch.utils; print(torch.utils.cmake_prefix_path)"
    OUTPUT_VARIABLE _prefix OUTPUT_STRIP_TRAILING_WHITESPACE
    RESULT_VARIABLE _rc ERROR_QUIET)
  if(_rc EQUAL 0 AND _prefix)
    set(${out_var} "${_prefix}" PARENT_SCOPE)
  else()
    set(${out_var} "${out_var}-NOTFOUND" PARENT_SCOPE)
  endif()
endfunction()

# fabric_torch_defaults(): the settings LibTorch's CMake package needs from a CUDA wheel on a
# machine that may have no GPU, unless the project set them itself.
macro(fabric_torch_defaults)
  # The wheel is a CUDA build; its CMake config looks for the CUDA toolkit and cuDNN/NVTX.
  # These only matter for the CUDA paths, which link but never run on the CPU machines.
  if(NOT DEFINED CAFFE2_USE_CUDNN)
    set(CAFFE2_USE_CUDNN OFF CACHE BOOL "")
  endif()
  # Without an explicit list, Caffe2's CMake compiles and runs a probe for the installed GPUs,
  # which fails on machines without one. We compile no CUDA kernels; Hopper is the GPU we run on.
  if(NOT DEFINED ENV{TORCH_CUDA_ARCH_LIST} AND NOT TORCH_CUDA_ARCH_LIST)
    set(TORCH_CUDA_ARCH_LIST "9.0")
  endif()
endmacro()
