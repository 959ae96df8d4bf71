// What each precision does to parameters, inputs, the dtype of work inside forward,
// outputs and gradients (Lightning's precision plugins, §5 of the behaviour reference).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "fabric/fabric.h"
#include "fabric/grad_scaler.h"
#include "support/test_models.h"

namespace fabric {
namespace {

using testing::ProbeNet;

struct PrecisionCase {
  std::string input;           // what the user passes
  std::string name;            // what Fabric resolves it to on the CPU
  torch::ScalarType param;     // parameter dtype after setup
  torch::ScalarType compute;   // dtype of the matmul inside forward
  torch::ScalarType output;    // dtype forward returns
};

class PrecisionTest : public ::testing::TestWithParam<PrecisionCase> {};

TEST_P(PrecisionTest, SetupForwardBackward_UseThePrecisionsDtypes) {
  const auto& c = GetParam();
  Fabric fabric({.accelerator = "cpu", .devices = 1, .precision = c.input});
  EXPECT_EQ(fabric.precision().name(), c.name);

  auto [model, optimizer] =
      fabric.setup(ProbeNet(), [](auto params) { return std::make_shared<torch::optim::SGD>(params, 0.1); });
  for (const auto& param : model.parameters()) EXPECT_EQ(param.scalar_type(), c.param);

  torch::Tensor input = torch::randn({4, 8});
  torch::Tensor output = model(input);
  EXPECT_EQ(model->matmul_dtype, c.compute);
  EXPECT_EQ(output.scalar_type(), c.output);
  EXPECT_EQ(torch::get_default_dtype_as_scalartype(), torch::kFloat32) << "forward must restore the default dtype";

  fabric.backward(output.pow(2).mean());
  for (const auto& param : model.parameters()) {
    ASSERT_TRUE(param.grad().defined());
    EXPECT_EQ(param.grad().scalar_type(), c.param);
    EXPECT_TRUE(torch::isfinite(param.grad()).all().item<bool>());
  }
  EXPECT_TRUE(optimizer.step());
}

INSTANTIATE_TEST_SUITE_P(
    EveryPrecision, PrecisionTest,
    ::testing::Values(PrecisionCase{"32-true", "32-true", torch::kFloat32, torch::kFloat32, torch::kFloat32},
                      PrecisionCase{"64-true", "64-true", torch::kFloat64, torch::kFloat64, torch::kFloat32},
                      PrecisionCase{"16-true", "16-true", torch::kFloat16, torch::kFloat16, torch::kFloat32},
                      PrecisionCase{"bf16-true", "bf16-true", torch::kBFloat16, torch::kBFloat16, torch::kFloat32},
                      PrecisionCase{"bf16-mixed", "bf16-mixed", torch::kFloat32, torch::kBFloat16, torch::kFloat32},
                      // CPU autocast has no float16 scaling: Lightning switches to bf16-mixed.
                      PrecisionCase{"16-mixed", "bf16-mixed", torch::kFloat32, torch::kBFloat16, torch::kFloat32}),
    [](const auto& info) {
      std::string name = info.param.input;
      for (char& ch : name) ch = ch == '-' ? '_' : ch;
      return name;
    });

TEST(Precision, Mixed_CastsFloatingInputsOnly) {
  struct Echo : torch::nn::Module {
    std::pair<torch::Tensor, torch::Tensor> forward(torch::Tensor floating, torch::Tensor integer) {
      seen_floating = floating.scalar_type();
      seen_integer = integer.scalar_type();
      return {floating * 2, integer};
    }
    torch::ScalarType seen_floating{}, seen_integer{};
  };
  Fabric fabric({.accelerator = "cpu", .precision = "bf16-mixed"});
  auto model = fabric.setup_module(std::make_shared<Echo>());
  auto [out_float, out_int] = model(torch::ones({2}), torch::ones({2}, torch::kLong));
  EXPECT_EQ(model->seen_floating, torch::kBFloat16);
  EXPECT_EQ(model->seen_integer, torch::kLong);
  EXPECT_EQ(out_float.scalar_type(), torch::kFloat32);
  EXPECT_EQ(out_int.scalar_type(), torch::kLong);
}

TEST(Precision, Mixed_DirectLossBackwardIsRefused) {
  Fabric fabric({.accelerator = "cpu", .precision = "bf16-mixed"});
  auto model = fabric.setup_module(ProbeNet());
  torch::Tensor loss = model(torch::randn({2, 8})).sum();
  try {
    loss.backward();
    FAIL() << "loss.backward() under bf16-mixed should be refused";
  } catch (const std::exception& error) {
    EXPECT_NE(std::string(error.what()).find("fabric.backward(loss)"), std::string::npos) << error.what();
  }
  torch::Tensor again = model(torch::randn({2, 8})).sum();
  EXPECT_NO_THROW(fabric.backward(again));
}

TEST(Precision, FullPrecision_DirectLossBackwardIsAllowed) {
  Fabric fabric({.accelerator = "cpu"});
  auto model = fabric.setup_module(ProbeNet());
  EXPECT_NO_THROW(model(torch::randn({2, 8})).sum().backward());
}

TEST(Precision, Autocast_AppliesOutsideForward) {
  Fabric fabric({.accelerator = "cpu", .precision = "bf16-mixed"});
  torch::Tensor a = torch::randn({4, 4}), b = torch::randn({4, 4});
  {
    auto autocast = fabric.autocast();
    EXPECT_EQ(torch::mm(a, b).scalar_type(), torch::kBFloat16);
  }
  EXPECT_EQ(torch::mm(a, b).scalar_type(), torch::kFloat32) << "autocast must end with its scope";
}

TEST(Precision, InitModule_CreatesParametersInTheTruePrecisionsDtype) {
  Fabric fabric({.accelerator = "cpu", .precision = "64-true"});
  {
    auto init = fabric.init_module();
    torch::nn::Linear layer(3, 2);
    EXPECT_EQ(layer->weight.scalar_type(), torch::kFloat64);
  }
  EXPECT_EQ(torch::get_default_dtype_as_scalartype(), torch::kFloat32);
  Fabric bf16({.accelerator = "cpu", .precision = "bf16-true"});
  {
    auto init = bf16.init_tensor();
    EXPECT_EQ(torch::randn({2}).scalar_type(), torch::kBFloat16);
  }
  Fabric mixed({.accelerator = "cpu", .precision = "bf16-mixed"});
  {
    auto init = mixed.init_module(/*empty_init=*/true);
    EXPECT_EQ(torch::nn::Linear(3, 2)->weight.scalar_type(), torch::kFloat32) << "mixed keeps float32 weights";
  }
}

TEST(GradScaler, SkipsStepAndBacksOffOnNonFiniteGradients) {
  GradScaler scaler(torch::kCPU, {.init_scale = 1024.0, .growth_interval = 2});
  torch::Tensor weight = torch::ones({3}, torch::requires_grad());
  torch::optim::SGD optimizer({weight}, 1.0);

  scaler.scale((weight * 2).sum()).backward();
  EXPECT_DOUBLE_EQ(weight.grad()[0].item<double>(), 2048.0) << "the loss is multiplied by the scale";
  EXPECT_TRUE(scaler.step(optimizer));
  EXPECT_TRUE(torch::allclose(weight, torch::full({3}, -1.0))) << "the step used unscaled gradients";
  scaler.update();
  EXPECT_DOUBLE_EQ(scaler.get_scale(), 1024.0);

  optimizer.zero_grad();
  scaler.scale((weight * std::numeric_limits<float>::infinity()).sum()).backward();
  EXPECT_FALSE(scaler.step(optimizer)) << "a non-finite gradient skips the step";
  EXPECT_TRUE(torch::allclose(weight, torch::full({3}, -1.0)));
  scaler.update();
  EXPECT_DOUBLE_EQ(scaler.get_scale(), 512.0);

  for (int i = 0; i < 2; ++i) {  // growth_interval clean steps double the scale
    optimizer.zero_grad();
    scaler.scale(weight.sum()).backward();
    EXPECT_TRUE(scaler.step(optimizer));
    scaler.update();
  }
  EXPECT_DOUBLE_EQ(scaler.get_scale(), 1024.0);
}

TEST(GradScaler, UnscaleTwiceBeforeUpdateIsRefused) {
  GradScaler scaler(torch::kCPU);
  torch::Tensor weight = torch::ones({2}, torch::requires_grad());
  torch::optim::SGD optimizer({weight}, 1.0);
  scaler.scale(weight.sum()).backward();
  scaler.unscale_(optimizer);
  EXPECT_THROW(scaler.unscale_(optimizer), UsageError);
  EXPECT_TRUE(scaler.step(optimizer)) << "step after unscale_ does not unscale again";
  EXPECT_TRUE(torch::allclose(weight, torch::zeros({2})));
}

}  // namespace
}  // namespace fabric
