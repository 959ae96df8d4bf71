// Whether fabric.backward() is running: the one piece of process-wide state that lets a
// hook on a model output tell fabric.backward(loss) from a bare loss.backward(). Atomic
// because CUDA autograd runs hooks on the engine's device threads.
#pragma once

#include <atomic>

namespace fabric::detail {

inline std::atomic<int> fabric_backward_depth{0};

inline bool inside_fabric_backward() { return fabric_backward_depth.load() > 0; }

// Marks fabric.backward() as running for its lifetime.
class FabricBackwardMark {
 public:
  FabricBackwardMark() { ++fabric_backward_depth; }
  ~FabricBackwardMark() { --fabric_backward_depth; }
  FabricBackwardMark(const FabricBackwardMark&) = delete;
  FabricBackwardMark& operator=(const FabricBackwardMark&) = delete;
};

}  // namespace fabric::detail
