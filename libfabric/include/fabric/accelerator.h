// An accelerator knows one kind of device: whether it is there, how many there are, how a
// `devices=` value maps to concrete devices, and how to make one current. One
// implementation per device type (src/accelerators/cpu, cuda), like Lightning's.
#pragma once

#include <torch/types.h>

#include <string_view>
#include <vector>

#include "fabric/options.h"

namespace fabric {

class Accelerator {
 public:
  virtual ~Accelerator() = default;

  virtual std::string_view name() const = 0;
  virtual torch::DeviceType device_type() const = 0;
  virtual bool is_available() const = 0;
  // How many devices "auto" means on this node.
  virtual int auto_device_count() const = 0;
  // The devices a `devices=` value selects, or ConfigurationError saying what is valid.
  virtual std::vector<torch::Device> parse_devices(const Devices& devices) const = 0;
  // Makes `device` the current one for this process (cudaSetDevice for CUDA).
  virtual void setup_device(torch::Device device) const = 0;
};

}  // namespace fabric
