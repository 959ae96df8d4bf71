// What only a CUDA device can show: placement on it, the GradScaler's skipped step on real
// fp16 overflow, NCCL collectives and DDP over NCCL, and checkpoints of CUDA state. Every
// test skips where torch sees no CUDA device (CI); the numerics of each precision on CUDA
// are checked against PyTorch itself in integration/parity. A GPU machine runs these with
// scripts/gpu-check.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "environments/variables.h"
#include "fabric/collective.h"
#include "fabric/fabric.h"
#include "fabric/grad_scaler.h"
#include "support/processes.h"
#include "support/temp_dir.h"
#include "support/test_models.h"

namespace fabric {
namespace {

using testing::ProbeNet;
using testing::ScopedTempDir;

class Cuda : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device here";
  }
};

torch::nn::Sequential small_mlp() {
  return torch::nn::Sequential(torch::nn::Linear(8, 32), torch::nn::ReLU(), torch::nn::Linear(32, 4));
}

TEST_F(Cuda, SetupPlacesModelOptimizerStateAndBatchesOnTheDevice) {
  Fabric fabric({.accelerator = "cuda", .devices = 1});
  EXPECT_EQ(fabric.device(), torch::Device(torch::kCUDA, 0));
  auto [model, optimizer] = fabric.setup(small_mlp(), [](auto params) {
    return std::make_shared<torch::optim::Adam>(params, torch::optim::AdamOptions(1e-3));
  });
  for (const auto& parameter : model->parameters()) EXPECT_TRUE(parameter.is_cuda());

  auto dataset = torch::data::datasets::TensorDataset(torch::randn({10, 8}));
  auto loader = fabric.setup_dataloader(dataset, {.batch_size = 4});
  for (auto& batch : loader) {
    EXPECT_TRUE(batch.data.is_cuda());
    optimizer.zero_grad();
    fabric.backward(model(batch.data).sum());
    optimizer.step();
  }
  for (const auto& group : optimizer->param_groups()) {
    for (const auto& parameter : group.params()) {
      auto& state = static_cast<torch::optim::AdamParamState&>(
          *optimizer->state().at(parameter.unsafeGetTensorImpl()));
      EXPECT_TRUE(state.exp_avg().is_cuda());
    }
  }
}

TEST_F(Cuda, MixedPrecisionsRunTheMatmulInTheirHalfTypeAndReturnFloat32) {
  for (const auto& [precision, dtype] : {std::pair{"16-mixed", torch::kHalf}, std::pair{"bf16-mixed", torch::kBFloat16}}) {
    Fabric fabric({.accelerator = "cuda", .devices = 1, .precision = precision});
    auto model = fabric.setup(ProbeNet());
    torch::Tensor output = model(torch::randn({2, 8}, torch::kCUDA));
    EXPECT_EQ(model->matmul_dtype, dtype) << precision;
    EXPECT_EQ(output.scalar_type(), torch::kFloat32) << precision;
    EXPECT_EQ(model->fc1->weight.scalar_type(), torch::kFloat32) << precision << ": mixed keeps float32 weights";
  }
}

TEST_F(Cuda, GradScalerSkipsTheStepOnFp16OverflowAndBacksOff) {
  Fabric fabric({.accelerator = "cuda", .devices = 1, .precision = "16-mixed"});
  auto [model, optimizer] = fabric.setup(ProbeNet(), [](auto params) {
    return std::make_shared<torch::optim::SGD>(params, torch::optim::SGDOptions(0.1));
  });
  GradScaler* scaler = fabric.precision().grad_scaler();
  ASSERT_NE(scaler, nullptr);
  const double scale = scaler->get_scale();
  const torch::Tensor before = model->fc1->weight.detach().clone();

  // 1e5 in every input overflows fp16 (max 65504) inside the autocast matmul: inf gradients.
  optimizer.zero_grad();
  fabric.backward(model(torch::full({2, 8}, 1e5, torch::kCUDA)).sum());
  EXPECT_FALSE(optimizer.step()) << "a step with inf gradients must be skipped";
  EXPECT_TRUE(torch::equal(model->fc1->weight.detach(), before));
  EXPECT_DOUBLE_EQ(scaler->get_scale(), scale * 0.5);

  // An ordinary loss now steps (a mean keeps the scaled fp16 gradients in range).
  optimizer.zero_grad();
  fabric.backward(model(torch::randn({2, 8}, torch::kCUDA)).mean());
  EXPECT_TRUE(optimizer.step());
  EXPECT_FALSE(torch::equal(model->fc1->weight.detach(), before));
}

TEST_F(Cuda, GradScaling_RefusesLbfgsAndClosures_ButPassesBackwardArguments) {
  Fabric fabric({.accelerator = "cuda", .devices = 1, .precision = "16-mixed"});
  auto [model, lbfgs] = fabric.setup(ProbeNet(), [](auto params) {
    return std::make_shared<torch::optim::LBFGS>(params, torch::optim::LBFGSOptions(0.1));
  });
  const auto closure = [&, &model = model] {
    torch::Tensor loss = model(torch::randn({2, 8}, torch::kCUDA)).mean();
    fabric.backward(loss);
    return loss;
  };
  try {
    lbfgs.step(closure);
    FAIL() << "16-mixed with LBFGS must be refused";
  } catch (const UsageError& error) {
    EXPECT_NE(std::string(error.what()).find("LBFGS"), std::string::npos) << error.what();
  }
  // The scaled loss still gets autograd's arguments: only the first layer's bias accumulates.
  fabric.backward(model(torch::randn({2, 8}, torch::kCUDA)).mean(), {.inputs = {model->fc1->bias}});
  EXPECT_TRUE(model->fc1->bias.grad().defined());
  EXPECT_FALSE(model->fc1->weight.grad().defined());
}

TEST_F(Cuda, TruePrecisionsConvertTheModelAndItsInputs) {
  for (const auto& [precision, dtype] : {std::pair{"16-true", torch::kHalf}, std::pair{"bf16-true", torch::kBFloat16}}) {
    Fabric fabric({.accelerator = "cuda", .devices = 1, .precision = precision});
    auto model = fabric.setup(ProbeNet());
    EXPECT_EQ(model->fc1->weight.scalar_type(), dtype) << precision;
    torch::Tensor output = model(torch::randn({2, 8}, torch::kCUDA));
    EXPECT_EQ(model->input_dtype, dtype) << precision;
    EXPECT_EQ(output.scalar_type(), torch::kFloat32) << precision;
  }
}

// One rank is all one GPU allows NCCL (it refuses two ranks on one device), but it runs
// the whole path: the TCP store, ProcessGroupNCCL's communicator, and each operation.
TEST_F(Cuda, NcclCollectivesOfOneRank) {
  environments::FixedEnvironment environment(
      {.name = "test", .external = true, .main_port = testing::free_port()});
  auto collective = make_collective(environment, torch::Device(torch::kCUDA, 0), {.timeout = std::chrono::seconds(60)});
  EXPECT_EQ(collective->backend(), "nccl");
  collective->barrier();
  torch::Tensor value = torch::arange(4, torch::TensorOptions().device(torch::kCUDA).dtype(torch::kFloat32));
  collective->all_reduce(value, ReduceOp::kSum);
  EXPECT_TRUE(torch::equal(value.cpu(), torch::arange(4, torch::kFloat32)));
  collective->broadcast(value, 0);
  auto gathered = collective->all_gather(value);
  ASSERT_EQ(gathered.size(), 1u);
  EXPECT_TRUE(gathered[0].is_cuda());
  EXPECT_TRUE(torch::equal(gathered[0].cpu(), torch::arange(4, torch::kFloat32)));
  EXPECT_EQ(collective->broadcast_bytes("nccl bytes", 0), "nccl bytes");
}

std::vector<torch::Tensor> train_steps(Fabric& fabric, int steps) {
  torch::manual_seed(7);
  auto [model, optimizer] = fabric.setup(small_mlp(), [](auto params) {
    return std::make_shared<torch::optim::SGD>(params, torch::optim::SGDOptions(0.05));
  });
  for (int step = 0; step < steps; ++step) {
    optimizer.zero_grad();
    torch::Tensor x = torch::randn({16, 8}).to(fabric.device());
    fabric.backward(model(x).pow(2).mean());
    optimizer.step();
  }
  std::vector<torch::Tensor> parameters;
  for (const auto& parameter : model->parameters()) parameters.push_back(parameter.detach().cpu());
  return parameters;
}

// launch() publishes the rank variables in this process's environment, as Lightning does;
// later tests must not mistake them for a torchrun launch.
struct RankVariablesCleanup {
  ~RankVariablesCleanup() {
    for (const char* name : {"MASTER_ADDR", "MASTER_PORT", "RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE",
                             "NODE_RANK", "GROUP_RANK"}) {
      ::unsetenv(name);
    }
  }
};

TEST_F(Cuda, DdpOverNcclEndsWhereOneDeviceEnds) {
  RankVariablesCleanup cleanup;
  ::setenv("MASTER_PORT", std::to_string(testing::free_port()).c_str(), 1);
  Fabric single({.accelerator = "cuda", .devices = 1});
  Fabric ddp({.accelerator = "cuda", .strategy = "ddp", .devices = 1});
  ddp.launch();
  EXPECT_EQ(ddp.world_size(), 1);
  const auto expected = train_steps(single, 5);
  const auto actual = train_steps(ddp, 5);
  ASSERT_EQ(expected.size(), actual.size());
  for (std::size_t i = 0; i < expected.size(); ++i) {
    EXPECT_TRUE(torch::allclose(actual[i], expected[i], 1e-6, 1e-7)) << "parameter " << i;
  }
  torch::Tensor mean = ddp.all_reduce(torch::ones({2}, torch::kCUDA) * 3, "mean");
  EXPECT_TRUE(torch::equal(mean.cpu(), torch::full({2}, 3.0f)));
  // CPU tensors and plain values are moved to the device for NCCL, as Lightning does.
  torch::Tensor sum = ddp.all_reduce(torch::ones({2}), "sum");
  EXPECT_TRUE(sum.is_cuda());
  EXPECT_EQ(ddp.all_gather(torch::arange(3)).at(0).numel(), 3);
  EXPECT_EQ(ddp.broadcast(std::string("over nccl")), "over nccl");
  EXPECT_EQ(ddp.broadcast(7), 7);
  ddp.barrier();
}

TEST_F(Cuda, CheckpointOfCudaStateLoadsOnTheCpuAndBackOnTheDevice) {
  ScopedTempDir dir;
  Fabric fabric({.accelerator = "cuda", .devices = 1});
  auto [model, optimizer] = fabric.setup(small_mlp(), [](auto params) {
    return std::make_shared<torch::optim::Adam>(params, torch::optim::AdamOptions(1e-3));
  });
  optimizer.zero_grad();
  fabric.backward(model(torch::randn({4, 8}, torch::kCUDA)).sum());
  optimizer.step();
  fabric.save(dir / "cuda.pt", {{"model", model}, {"optimizer", optimizer}, {"step", 1}});

  Fabric cpu({.accelerator = "cpu"});
  auto [cpu_model, cpu_optimizer] = cpu.setup(small_mlp(), [](auto params) {
    return std::make_shared<torch::optim::Adam>(params, torch::optim::AdamOptions(1e-3));
  });
  State cpu_state{{"model", cpu_model}, {"optimizer", cpu_optimizer}, {"step", 0}};
  cpu.load(dir / "cuda.pt", cpu_state);
  const auto ours = model->parameters(), loaded = cpu_model->parameters();
  for (std::size_t i = 0; i < ours.size(); ++i) {
    EXPECT_FALSE(loaded[i].is_cuda());
    EXPECT_TRUE(torch::equal(loaded[i], ours[i].detach().cpu())) << "parameter " << i;
  }

  auto [again, again_optimizer] = fabric.setup(small_mlp(), [](auto params) {
    return std::make_shared<torch::optim::Adam>(params, torch::optim::AdamOptions(1e-3));
  });
  State cuda_state{{"model", again}, {"optimizer", again_optimizer}};
  fabric.load(dir / "cuda.pt", cuda_state, /*strict=*/false);
  for (const auto& parameter : again->parameters()) EXPECT_TRUE(parameter.is_cuda());
  EXPECT_TRUE(torch::equal(again->parameters()[0].detach(), ours[0].detach()));
}

}  // namespace
}  // namespace fabric
