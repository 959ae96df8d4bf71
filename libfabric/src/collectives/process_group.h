// Backends that LibTorch's DDP machinery (c10d::Reducer) can drive expose their c10d
// ProcessGroup through this internal interface; strategies reach it with dynamic_cast.
#pragma once

#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>

namespace fabric::collectives {

class HasProcessGroup {
 public:
  virtual ~HasProcessGroup() = default;
  virtual c10::intrusive_ptr<c10d::ProcessGroup> process_group() = 0;
};

}  // namespace fabric::collectives
