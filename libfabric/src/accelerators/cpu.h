// The CPU accelerator: always available; devices=N means N processes on this machine.
#pragma once

#include "fabric/accelerator.h"

namespace fabric::accelerators {

class CpuAccelerator final : public Accelerator {
 public:
  std::string_view name() const override { return "cpu"; }
  torch::DeviceType device_type() const override { return torch::kCPU; }
  bool is_available() const override { return true; }
  int auto_device_count() const override { return 1; }
  std::vector<torch::Device> parse_devices(const Devices& devices) const override;
  void setup_device(torch::Device device) const override;
};

}  // namespace fabric::accelerators
