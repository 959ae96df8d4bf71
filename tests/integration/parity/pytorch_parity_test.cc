// Parity with PyTorch itself: the same MLP, initial weights and batches, trained 20 steps
// with Adam by plain PyTorch (reference.py) and through Fabric here. "32-true" and "64-true"
// loss trajectories must agree within 1e-5 relative; the sampler must draw PyTorch's
// DistributedSampler order.
#include <gtest/gtest.h>
#include <torch/torch.h>

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

class PytorchParity : public ::testing::TestWithParam<std::string> {};

TEST_P(PytorchParity, LossTrajectoryMatchesPyTorch) {
  const std::string precision = GetParam();
  ScopedTempDir dir;
  const std::string dtype = precision == "64-true" ? "float64" : "float32";
  ASSERT_EQ(testing::run_python("tests/integration/parity/reference.py",
                                "--out " + dir.path() + " --dtype " + dtype + " --steps 20"),
            0);

  Fabric fabric({.accelerator = "cpu", .precision = precision});
  auto model = build_model();
  load_weights(model, load_torch_file(dir / "init.pt"));
  auto [fabric_model, optimizer] = fabric.setup(model, [](auto params) {
    return std::make_shared<torch::optim::Adam>(params, torch::optim::AdamOptions(1e-2));
  });
  auto batches = load_torch_file(dir / "batches.pt").toGenericDict();
  torch::Tensor x = batches.at("x").toTensor(), y = batches.at("y").toTensor();
  torch::Tensor expected = load_torch_file(dir / "losses.pt").toTensor();

  for (int64_t step = 0; step < expected.size(0); ++step) {
    optimizer.zero_grad();
    torch::Tensor loss = torch::nn::functional::cross_entropy(fabric_model(x[step]), y[step]);
    fabric.backward(loss);
    optimizer.step();
    const double ours = loss.item<double>(), theirs = expected[step].item<double>();
    EXPECT_NEAR(ours, theirs, 1e-5 * std::abs(theirs)) << "step " << step << " with " << precision;
  }
}

INSTANTIATE_TEST_SUITE_P(TruePrecisions, PytorchParity, ::testing::Values("32-true", "64-true"),
                         [](const auto& info) { return info.param == "32-true" ? "Float32" : "Float64"; });

TEST(PytorchParitySampler, ShuffledShardsMatchTorchDistributedSampler) {
  ScopedTempDir dir;
  ASSERT_EQ(testing::run_python("tests/integration/parity/reference.py",
                                "--out " + dir.path() + " --dtype float32 --steps 1"),
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
