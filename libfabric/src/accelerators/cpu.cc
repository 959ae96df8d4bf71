#include "accelerators/cpu.h"

#include "accelerators/device_parser.h"
#include "fabric/errors.h"

namespace fabric::accelerators {

std::vector<torch::Device> CpuAccelerator::parse_devices(const Devices& devices) const {
  return std::vector<torch::Device>(static_cast<size_t>(parse_device_count(devices, "cpu")), torch::kCPU);
}

void CpuAccelerator::setup_device(torch::Device device) const {
  if (!device.is_cpu()) {
    throw ConfigurationError("The cpu accelerator cannot set up device " + device.str() + ".");
  }
}

}  // namespace fabric::accelerators
