// What the DDP test's ranks and its single-process reference share: the model (identical
// on every rank from the same seed) and the global batches, which depend only on the step.
#pragma once

#include <torch/torch.h>

#include <ATen/CPUGeneratorImpl.h>

#include <utility>

namespace ddp_reference {

constexpr int kRowsPerRank = 8;

inline torch::nn::Sequential build_model() {
  torch::manual_seed(0);
  return torch::nn::Sequential(torch::nn::Linear(16, 32), torch::nn::Tanh(), torch::nn::Linear(32, 4));
}

inline std::pair<torch::Tensor, torch::Tensor> global_batch(int step, int world) {
  auto generator = at::make_generator<at::CPUGeneratorImpl>(500 + step);
  return {torch::randn({kRowsPerRank * world, 16}, generator), torch::randint(0, 4, {kRowsPerRank * world}, generator)};
}

}  // namespace ddp_reference
