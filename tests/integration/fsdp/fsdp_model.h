// What the FSDP test's ranks share: a model with units of uneven sizes (so shards are
// padded and some parameters straddle two ranks), a parameter of the root's own, and the
// global batches, which depend only on the step.
#pragma once

#include <torch/torch.h>

#include <ATen/CPUGeneratorImpl.h>

#include <utility>

namespace fsdp_model {

constexpr int kRowsPerRank = 8;

struct NetImpl : torch::nn::Module {
  torch::nn::Sequential body = register_module(
      "body", torch::nn::Sequential(torch::nn::Linear(16, 32), torch::nn::Tanh(), torch::nn::Linear(32, 24),
                                    torch::nn::Tanh(), torch::nn::Linear(24, 4)));
  torch::Tensor scale = register_parameter("scale", torch::ones({4}));
  torch::Tensor forward(const torch::Tensor& x) { return body->forward(x) * scale; }
};
TORCH_MODULE(Net);

inline Net build_model() {
  torch::manual_seed(0);
  return Net();
}

inline std::pair<torch::Tensor, torch::Tensor> global_batch(int step, int world) {
  auto generator = at::make_generator<at::CPUGeneratorImpl>(700 + step);
  return {torch::randn({kRowsPerRank * world, 16}, generator), torch::randint(0, 4, {kRowsPerRank * world}, generator)};
}

}  // namespace fsdp_model
