// The CUDA accelerator: devices=N means GPUs 0..N-1, "1,3" or {1, 3} exact indices.
#pragma once

#include "fabric/accelerator.h"

namespace fabric::accelerators {

class CudaAccelerator final : public Accelerator {
 public:
  std::string_view name() const override { return "cuda"; }
  torch::DeviceType device_type() const override { return torch::kCUDA; }
  bool is_available() const override;
  int auto_device_count() const override;
  std::vector<torch::Device> parse_devices(const Devices& devices) const override;
  void setup_device(torch::Device device) const override;
};

}  // namespace fabric::accelerators
