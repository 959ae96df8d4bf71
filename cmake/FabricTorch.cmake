# Finds LibTorch inside the PyPI torch wheel pinned in scripts/python-requirements.txt.
#
# The wheel ships the C++ headers, the shared libraries and share/cmake/Torch. We ask the
# Python that has it (FABRIC_PYTHON, set by scripts/bootstrap's environment) where it is,
# and refuse a torch whose version differs from the pin: binaries must match the libtorch
# they will load on the GPU machines. A project that builds us as its subproject and has
# found its own Torch keeps it (a different version is a warning there, not an error).
include(FabricTorchWheel)
set(FABRIC_PYTHON "" CACHE STRING "Python interpreter that has the pinned torch wheel")
if(NOT FABRIC_PYTHON)
  set(FABRIC_PYTHON python3)
endif()

file(STRINGS "${CMAKE_CURRENT_LIST_DIR}/../scripts/python-requirements.txt" _pin REGEX "^torch==")
string(REPLACE "torch==" "" FABRIC_TORCH_VERSION "${_pin}")

if(NOT Torch_DIR AND NOT TARGET torch)
  fabric_torch_prefix_from_python(${FABRIC_PYTHON} _torch_prefix)
  if(NOT _torch_prefix)
    message(FATAL_ERROR "${FABRIC_PYTHON} cannot import torch. Run scripts/bootstrap, "
                        "or pass -DFABRIC_PYTHON=<python with torch==${FABRIC_TORCH_VERSION}>.")
  endif()
  list(APPEND CMAKE_PREFIX_PATH "${_torch_prefix}")
endif()

fabric_torch_defaults()
find_package(Torch REQUIRED)

if(NOT Torch_VERSION VERSION_EQUAL FABRIC_TORCH_VERSION)
  set(_message "Found torch ${Torch_VERSION} at ${Torch_DIR}, but "
               "scripts/python-requirements.txt pins ${FABRIC_TORCH_VERSION}.")
  if(PROJECT_IS_TOP_LEVEL)
    message(FATAL_ERROR "${_message} Run scripts/bootstrap.")
  endif()
  message(WARNING "${_message} libfabric is tested with the pinned version only.")
endif()
message(STATUS "LibTorch ${Torch_VERSION} from ${Torch_DIR}")
