// Parity with PyTorch itself: the same MLP, initial weights and batches, trained 20 steps
// with Adam by plain PyTorch (reference.py) and through Fabric here, for each precision on
// the CPU and (where there is one) a CUDA device: the loss trajectories must agree step by
// step. The sampler must draw PyTorch's DistributedSampler order.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <iostream>

#include "fabric/fabric.h"
#include "support/python.h"

namespace fabric {
namespace {

using testing::load_torch_file;
using testing::ScopedTempDir;

torch::nn::Sequential build_model() {
  return torch::nn::Sequential(torch::nn::Linear(16, 32), torch::nn::Tanh(), torch::nn::Linear(32, 32),
                               torch::nn::Tanh(), torch::nn::Linear(32, 4));
}

void load_weights(torch::nn::Sequential& model, const torch::IValue& state) {
  torch::NoGradGuard no_grad;
  auto dict = state.toGenericDict();
  for (auto& item : model->named_parameters()) {
    ASSERT_TRUE(dict.contains(item.key())) << "reference has no " << item.key();
    item.value().copy_(dict.at(item.key()).toTensor());
  }
}

struct ParityCase {
  std::string precision;
  std::string device;
  // Relative tolerance on each step's loss. Both sides run the same kernels, so the true
  // precisions agree to rounding; reduced precisions drift a little over 20 Adam steps.
  double tolerance;
};

// How gtest names a case in its output (ctest lists them): "bf16-mixed on cuda".
void PrintTo(const ParityCase& c, std::ostream* out) { *out << c.precision << " on " << c.device; }

class PytorchParity : public ::testing::TestWithParam<ParityCase> {};

TEST_P(PytorchParity, LossTrajectoryMatchesPyTorch) {
  const ParityCase& c = GetParam();
  if (c.device == "cuda" && !torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device here";
  ScopedTempDir dir;
  ASSERT_EQ(testing::run_python("tests/integration/parity/reference.py", "--out " + dir.path() + " --precision " +
                                                                             c.precision + " --device " + c.device +
                                                                             " --steps 20"),
            0);

  Fabric fabric({.accelerator = c.device, .devices = 1, .precision = c.precision});
  auto model = build_model();
  load_weights(model, load_torch_file(dir / "init.pt"));
  // reference.py's eps: Adam's default 1e-8 is 0 in float16 (NaN from the first step).
  const double eps = c.precision == "16-true" ? 1e-4 : 1e-8;
  auto [fabric_model, optimizer] = fabric.setup(model, [eps](auto params) {
    return std::make_shared<torch::optim::Adam>(params, torch::optim::AdamOptions(1e-2).eps(eps));
  });
  auto batches = load_torch_file(dir / "batches.pt").toGenericDict();
  torch::Tensor x = batches.at("x").toTensor(), y = batches.at("y").toTensor();
  torch::Tensor expected = load_torch_file(dir / "losses.pt").toTensor();

  double worst = 0;
  for (int64_t step = 0; step < expected.size(0); ++step) {
    optimizer.zero_grad();
    auto [input, target] = fabric.to_device(std::tuple(x[step], y[step]));
    torch::Tensor loss = torch::nn::functional::cross_entropy(fabric_model(input), target);
    fabric.backward(loss);
    optimizer.step();
    const double ours = loss.item<double>(), theirs = expected[step].item<double>();
    ASSERT_TRUE(std::isfinite(theirs)) << "PyTorch's own loss is not finite at step " << step;
    worst = std::max(worst, std::abs(ours - theirs) / std::abs(theirs));
    EXPECT_NEAR(ours, theirs, c.tolerance * std::abs(theirs)) << "step " << step;
  }
  RecordProperty("worst_relative_difference", std::to_string(worst));
  std::cout << c.precision << " on " << c.device << ": worst relative loss difference " << worst << "\n";
}

INSTANTIATE_TEST_SUITE_P(
    Precisions, PytorchParity,
    ::testing::Values(ParityCase{"32-true", "cpu", 1e-5}, ParityCase{"64-true", "cpu", 1e-5},
                      ParityCase{"bf16-mixed", "cpu", 1e-3}, ParityCase{"32-true", "cuda", 1e-5},
                      ParityCase{"16-mixed", "cuda", 1e-3}, ParityCase{"bf16-mixed", "cuda", 1e-3},
                      ParityCase{"16-true", "cuda", 1e-2}, ParityCase{"bf16-true", "cuda", 2e-2}),
    [](const auto& info) {
      std::string name = info.param.precision + "_" + info.param.device;
      std::replace(name.begin(), name.end(), '-', '_');
      return name;
    });

TEST(PytorchParitySampler, ShuffledShardsMatchTorchDistributedSampler) {
  ScopedTempDir dir;
  ASSERT_EQ(testing::run_python("tests/integration/parity/reference.py",
                                "--out " + dir.path() + " --precision 32-true --steps 1"),
            0);
  auto reference = load_torch_file(dir / "sampler.pt").toGenericDict();
  for (int rank = 0; rank < 3; ++rank) {
    for (std::uint64_t epoch = 0; epoch < 2; ++epoch) {
      data::DistributedSampler sampler(10, {.num_replicas = 3, .rank = rank, .shuffle = true, .seed = 7},
                                       std::make_shared<std::uint64_t>(epoch));
      sampler.reset();
      torch::Tensor theirs = reference.at("rank" + std::to_string(rank) + "_epoch" + std::to_string(epoch)).toTensor();
      std::vector<std::size_t> expected(theirs.data_ptr<int64_t>(), theirs.data_ptr<int64_t>() + theirs.numel());
      EXPECT_EQ(sampler.indices(), expected) << "rank " << rank << " epoch " << epoch;
    }
  }
}

}  // namespace
}  // namespace fabric
