// setup / setup_module / setup_optimizers / setup_dataloader, to_device, clip_gradients
// and seed_everything: Lightning Fabric's single-process semantics (reference §2).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <map>

#include "fabric/fabric.h"
#include "support/test_models.h"
#include "utilities/optimizer_state.h"

namespace fabric {
namespace {

using testing::ProbeNet;

TEST(Setup, FabricModule_KeepsTheModulesOwnParameterNames) {
  Fabric fabric({.accelerator = "cpu"});
  ProbeNet original;
  auto model = fabric.setup_module(original);
  EXPECT_EQ(model.named_parameters().keys(), original->named_parameters().keys());
  EXPECT_EQ(model.named_parameters().keys().front(), "fc1.weight") << "no wrapper prefix";
  EXPECT_EQ(model.module().get(), original.ptr().get()) << "the wrapper refers to the original module";
}

TEST(Setup, ModuleSetUpTwice_IsRefused) {
  Fabric fabric({.accelerator = "cpu"});
  auto model = fabric.setup_module(ProbeNet());
  try {
    fabric.setup_module(model);
    FAIL() << "a FabricModule passed to setup_module again must be refused";
  } catch (const UsageError& error) {
    EXPECT_NE(std::string(error.what()).find("only once"), std::string::npos);
  }
  EXPECT_NO_THROW(fabric.setup_module(model.module())) << "the unwrapped original may be set up again";
}

TEST(Setup, OptimizerSetUpTwice_IsRefused) {
  Fabric fabric({.accelerator = "cpu"});
  auto [model, optimizer] =
      fabric.setup(ProbeNet(), [](auto params) { return std::make_unique<torch::optim::Adam>(params); });
  EXPECT_THROW(fabric.setup_optimizers(optimizer), UsageError);
  EXPECT_THROW(fabric.setup(ProbeNet(), optimizer), UsageError);
}

TEST(Setup, OptimizerOnOtherDevice_MustComeAfterItsModule) {
  Fabric fabric({.accelerator = "cpu"});
  auto meta = torch::empty({2}, torch::TensorOptions().device(torch::kMeta).requires_grad(true));
  try {
    fabric.setup_optimizers(std::make_shared<torch::optim::SGD>(std::vector<torch::Tensor>{meta}, 0.1));
    FAIL() << "an optimizer over parameters off the device must be refused";
  } catch (const UsageError& error) {
    EXPECT_NE(std::string(error.what()).find("Set up the module first"), std::string::npos) << error.what();
  }
}

TEST(Setup, ExistingOptimizer_KeepsItsStateAndParameters) {
  Fabric fabric({.accelerator = "cpu"});
  ProbeNet net;
  auto sgd = std::make_shared<torch::optim::SGD>(net->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  net->forward(torch::randn({2, 8})).sum().backward();
  sgd->step();
  auto [model, optimizer] = fabric.setup(net, sgd);
  EXPECT_EQ(&optimizer.optimizer(), sgd.get());
  EXPECT_EQ(optimizer->state().size(), net->parameters().size()) << "momentum buffers survive setup";
  EXPECT_TRUE(optimizer.as<torch::optim::SGD>().param_groups()[0].params()[0].is_same(net->fc1->weight));
  EXPECT_THROW(optimizer.as<torch::optim::Adam>(), UsageError);
}

TEST(Setup, OptimizerState_MovesToTheTrainingDevice) {
  // The meta device stands in for a GPU: the state must follow wherever it is sent.
  torch::Tensor weight = torch::ones({3}, torch::requires_grad());
  torch::optim::SGD sgd({weight}, torch::optim::SGDOptions(0.1).momentum(0.9));
  torch::optim::AdamW adamw({weight});
  weight.sum().backward();
  sgd.step();
  adamw.step();
  utilities::move_optimizer_state(sgd, torch::kMeta);
  utilities::move_optimizer_state(adamw, torch::kMeta);
  auto& momentum = static_cast<torch::optim::SGDParamState&>(*sgd.state().begin()->second);
  EXPECT_TRUE(momentum.momentum_buffer().is_meta());
  auto& moments = static_cast<torch::optim::AdamWParamState&>(*adamw.state().begin()->second);
  EXPECT_TRUE(moments.exp_avg().is_meta());
  EXPECT_TRUE(moments.exp_avg_sq().is_meta());
}

TEST(Setup, SeveralOptimizers_ComeBackInOrder) {
  Fabric fabric({.accelerator = "cpu"});
  auto [model, first, second] = fabric.setup(
      ProbeNet(), [](auto params) { return std::make_shared<torch::optim::SGD>(params, 0.1); },
      [](auto params) { return std::make_shared<torch::optim::Adam>(params); });
  EXPECT_NO_THROW(first.as<torch::optim::SGD>());
  EXPECT_NO_THROW(second.as<torch::optim::Adam>());
}

TEST(ToDevice, MovesTensorsInNestedContainers) {
  Fabric fabric({.accelerator = "cpu"});
  std::map<std::string, std::vector<torch::Tensor>> batch = {{"x", {torch::ones({2}), torch::zeros({1})}}};
  auto moved = fabric.to_device(batch);
  EXPECT_EQ(moved["x"].size(), 2u);
  EXPECT_EQ(moved["x"][0].device(), fabric.device());
  auto pair = fabric.to_device(std::make_pair(torch::ones({1}), 7));
  EXPECT_EQ(pair.second, 7) << "non-tensors pass through";
  auto module = fabric.to_device(ProbeNet());
  EXPECT_EQ(module->fc1->weight.device(), fabric.device());
}

TEST(ClipGradients, ChoosesExactlyOneAlgorithm) {
  Fabric fabric({.accelerator = "cpu"});
  auto [model, optimizer] =
      fabric.setup(ProbeNet(), [](auto params) { return std::make_shared<torch::optim::SGD>(params, 0.1); });
  EXPECT_THROW(fabric.clip_gradients(model, optimizer, {.clip_val = 1.0, .max_norm = 1.0}), UsageError);
  EXPECT_THROW(fabric.clip_gradients(model, optimizer, {}), UsageError);
}

TEST(ClipGradients, MaxNorm_ReturnsTheTotalNormBeforeClipping) {
  Fabric fabric({.accelerator = "cpu", .precision = "64-true"});
  auto [model, optimizer] =
      fabric.setup(ProbeNet(), [](auto params) { return std::make_shared<torch::optim::SGD>(params, 0.1); });
  fabric.backward(model(torch::randn({4, 8})).pow(2).sum() * 100);
  double expected = 0;
  for (const auto& param : model.parameters()) expected += param.grad().pow(2).sum().item<double>();
  expected = std::sqrt(expected);
  auto norm = fabric.clip_gradients(model, optimizer, {.max_norm = 0.5});
  ASSERT_TRUE(norm.has_value());
  EXPECT_NEAR(*norm, expected, 1e-9 * expected);
  double clipped = 0;
  for (const auto& param : model.parameters()) clipped += param.grad().pow(2).sum().item<double>();
  EXPECT_NEAR(std::sqrt(clipped), 0.5, 1e-6);
}

TEST(ClipGradients, ClipVal_ClampsEachGradient) {
  Fabric fabric({.accelerator = "cpu"});
  auto [model, optimizer] =
      fabric.setup(ProbeNet(), [](auto params) { return std::make_shared<torch::optim::SGD>(params, 0.1); });
  fabric.backward(model(torch::randn({4, 8})).sum() * 1000);
  EXPECT_FALSE(fabric.clip_gradients(model, optimizer, {.clip_val = 0.01}).has_value());
  for (const auto& param : model.parameters()) EXPECT_LE(param.grad().abs().max().item<float>(), 0.01f + 1e-7f);
}

TEST(ClipGradients, NonFiniteNorm_IsAnErrorUnlessDisabled) {
  Fabric fabric({.accelerator = "cpu"});
  auto [model, optimizer] =
      fabric.setup(ProbeNet(), [](auto params) { return std::make_shared<torch::optim::SGD>(params, 0.1); });
  fabric.backward(model(torch::randn({1, 8})).sum() * std::numeric_limits<float>::infinity());
  EXPECT_THROW(fabric.clip_gradients(model, optimizer, {.max_norm = 1.0}), Error);
  EXPECT_NO_THROW(fabric.clip_gradients(model, optimizer, {.max_norm = 1.0, .error_if_nonfinite = false}));
}

// Trains a few steps on shuffled data and returns the final parameters.
std::vector<torch::Tensor> train_with_seed(std::int64_t seed) {
  Fabric::seed_everything(seed);
  Fabric fabric({.accelerator = "cpu"});
  auto [model, optimizer] =
      fabric.setup(ProbeNet(), [](auto params) { return std::make_shared<torch::optim::Adam>(params); });
  auto loader = fabric.setup_dataloader(torch::data::datasets::TensorDataset(torch::randn({64, 8})),
                                        {.batch_size = 16, .shuffle = true});
  for (int epoch = 0; epoch < 2; ++epoch) {
    for (auto& batch : loader) {
      optimizer.zero_grad();
      fabric.backward(model(torch::dropout(batch.data, 0.5, true)).pow(2).mean());
      optimizer.step();
    }
  }
  std::vector<torch::Tensor> params;
  for (const auto& param : model.parameters()) params.push_back(param.detach().clone());
  return params;
}

TEST(SeedEverything, SameSeed_SameRunBitForBit) {
  auto first = train_with_seed(42), second = train_with_seed(42), other = train_with_seed(43);
  ASSERT_EQ(first.size(), second.size());
  for (size_t i = 0; i < first.size(); ++i) EXPECT_TRUE(torch::equal(first[i], second[i])) << "parameter " << i;
  EXPECT_FALSE(torch::equal(first[0], other[0]));
  EXPECT_STREQ(std::getenv("PL_GLOBAL_SEED"), "43");
}

TEST(SeedEverything, OutOfRangeSeed_IsRefused) {
  EXPECT_THROW(Fabric::seed_everything(-1), ConfigurationError);
  EXPECT_THROW(Fabric::seed_everything(std::int64_t{1} << 32), ConfigurationError);
}

TEST(SetupDataloader, StacksBatchesAndReshufflesEveryEpoch) {
  Fabric::seed_everything(7);
  Fabric fabric({.accelerator = "cpu"});
  torch::Tensor data = torch::arange(10).unsqueeze(1).to(torch::kFloat32);
  auto loader = fabric.setup_dataloader(torch::data::datasets::TensorDataset(data), {.batch_size = 4, .shuffle = true});
  EXPECT_EQ(loader.size(), 3u);
  auto epoch_order = [&] {
    std::vector<long> order;
    for (auto& batch : loader) {
      EXPECT_EQ(batch.data.device(), fabric.device());
      for (int64_t i = 0; i < batch.data.size(0); ++i) order.push_back(batch.data[i][0].item<long>());
    }
    return order;
  };
  auto first = epoch_order(), second = epoch_order();
  EXPECT_NE(first, second) << "each epoch draws a new permutation";
  std::sort(first.begin(), first.end());
  EXPECT_EQ(first, (std::vector<long>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9})) << "an epoch visits every sample once";
}

TEST(SetupDataloader, ExamplesAreStackedIntoBatchTensors) {
  Fabric fabric({.accelerator = "cpu"});
  struct Pairs : torch::data::datasets::Dataset<Pairs> {
    torch::data::Example<> get(size_t i) override {
      return {torch::full({3}, static_cast<float>(i)), torch::tensor(static_cast<long>(i))};
    }
    std::optional<size_t> size() const override { return 10; }
  };
  auto loader = fabric.setup_dataloader(Pairs(), {.batch_size = 4, .drop_last = true});
  size_t batches = 0;
  for (auto& batch : loader) {
    EXPECT_EQ(batch.data.sizes(), (std::vector<int64_t>{4, 3}));
    EXPECT_EQ(batch.target.sizes(), (std::vector<int64_t>{4}));
    ++batches;
  }
  EXPECT_EQ(batches, 2u);
  EXPECT_EQ(loader.size(), 2u);
}

}  // namespace
}  // namespace fabric
