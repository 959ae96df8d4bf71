#include "accelerators/cuda.h"

#include <c10/core/DeviceGuard.h>
#include <torch/cuda.h>

#include "accelerators/device_parser.h"
#include "fabric/errors.h"

namespace fabric::accelerators {

bool CudaAccelerator::is_available() const { return torch::cuda::is_available(); }

int CudaAccelerator::auto_device_count() const { return static_cast<int>(torch::cuda::device_count()); }

std::vector<torch::Device> CudaAccelerator::parse_devices(const Devices& devices) const {
  std::vector<torch::Device> result;
  for (int id : parse_gpu_ids(devices, auto_device_count())) {
    result.emplace_back(torch::kCUDA, static_cast<c10::DeviceIndex>(id));
  }
  return result;
}

void CudaAccelerator::setup_device(torch::Device device) const {
  if (!device.is_cuda()) {
    throw ConfigurationError("The cuda accelerator cannot set up device " + device.str() + ".");
  }
  // Makes `device` current for this thread, so that kernels and NCCL use it.
  c10::impl::getDeviceGuardImpl(torch::kCUDA)->setDevice(device);
}

}  // namespace fabric::accelerators
