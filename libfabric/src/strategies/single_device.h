// One process on one device: no communication, no sharding, no launch.
#pragma once

#include "fabric/strategy.h"

namespace fabric::strategies {

class SingleDeviceStrategy final : public Strategy {
 public:
  SingleDeviceStrategy(torch::Device device, std::shared_ptr<Accelerator> accelerator,
                       std::unique_ptr<Precision> precision)
      : Strategy(std::move(accelerator), std::move(precision)), device_(device) {}

  std::string_view name() const override { return "single_device"; }
  torch::Device root_device() const override { return device_; }

 private:
  torch::Device device_;
};

}  // namespace fabric::strategies
