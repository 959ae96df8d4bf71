// The parts of Lightning Fabric's API beyond strings (reference §1.1, §2): backward's
// autograd arguments, optimizer.step(closure), zero_grad(set_to_none), the run() style, and
// accelerator / strategy / precision / plugins as instances with Lightning's conflict rules.
// Numbers are checked against closed forms or LibTorch itself, not against our own output.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <ATen/CPUGeneratorImpl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <map>
#include <string>

#include "fabric/fabric.h"
#include "fabric/strategies.h"
#include "support/temp_dir.h"

namespace fabric {
namespace {

// y = (w * x) summed, cubed elementwise: f(w) = sum((w x)^3).
struct Cubic : torch::nn::Module {
  torch::Tensor w = register_parameter("w", torch::tensor({0.5, -1.0, 2.0}, torch::kFloat64));
  torch::Tensor forward(const torch::Tensor& x) { return (w * x).pow(3).sum(); }
};

const torch::Tensor kX = torch::tensor({1.5, 2.0, -0.5}, torch::kFloat64);

template <typename Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const std::exception& error) {
    return error.what();
  }
  return "(no error)";
}

TEST(Backward, CreateGraph_GivesTheGradientOfTheGradient) {
  Fabric fabric({.accelerator = "cpu", .precision = "64-true"});
  auto model = fabric.setup_module(std::make_shared<Cubic>());
  fabric.backward(model(kX), {.create_graph = true});
  const torch::Tensor w = model->w.detach().clone();
  // df/dw = 3 w^2 x^3 ...
  EXPECT_TRUE(model->w.grad().allclose(3 * w.pow(2) * kX.pow(3)));
  ASSERT_TRUE(model->w.grad().requires_grad()) << "create_graph records backward itself";
  // ... and d/dw sum(df/dw) = 6 w x^3, through autograd's own grad().
  const torch::Tensor second = torch::autograd::grad({model->w.grad().sum()}, {model->w})[0];
  EXPECT_TRUE(second.allclose(6 * w * kX.pow(3)));
}

TEST(Backward, RetainGraph_AllowsASecondBackwardThatAccumulates) {
  Fabric fabric({.accelerator = "cpu", .precision = "64-true"});
  auto model = fabric.setup_module(std::make_shared<Cubic>());
  const torch::Tensor loss = model(kX);
  fabric.backward(loss, {.retain_graph = true});
  fabric.backward(loss);
  const torch::Tensor w = model->w.detach();
  EXPECT_TRUE(model->w.grad().allclose(2 * 3 * w.pow(2) * kX.pow(3)));
  EXPECT_THROW(fabric.backward(loss), c10::Error) << "the graph was freed by the second backward";
}

TEST(Backward, Inputs_AccumulateOnlyIntoThoseTensors) {
  Fabric fabric({.accelerator = "cpu"});
  auto model = fabric.setup_module(torch::nn::Linear(3, 1));
  fabric.backward(model(torch::ones({2, 3})).sum(), {.inputs = {model->bias}});
  EXPECT_TRUE(model->bias.grad().allclose(torch::full({1}, 2.0)));
  EXPECT_FALSE(model->weight.grad().defined()) << "weight was not among the inputs";
}

TEST(Backward, Gradient_SeedsANonScalarLoss) {
  Fabric fabric({.accelerator = "cpu"});
  auto model = fabric.setup_module(torch::nn::Linear(2, 2));
  const torch::Tensor seed = torch::tensor({{1.0f, 0.0f}});
  fabric.backward(model(torch::ones({1, 2})), {.gradient = seed});
  EXPECT_TRUE(model->bias.grad().allclose(seed.squeeze(0)));
}

TEST(Backward, MixedPrecision_PassesTheArgumentsOnToo) {
  Fabric fabric({.accelerator = "cpu", .precision = "bf16-mixed"});
  auto model = fabric.setup_module(torch::nn::Linear(3, 1));
  fabric.backward(model(torch::ones({2, 3})).sum(), {.inputs = {model->bias}});
  EXPECT_TRUE(model->bias.grad().defined());
  EXPECT_FALSE(model->weight.grad().defined());
}

// A strategy of the user's: single device, recording what backward was given.
struct RecordingStrategy : SingleDeviceStrategy {
  torch::nn::Module* last_model = nullptr;
  int backwards = 0;
  void backward(const torch::Tensor& loss, torch::nn::Module* module, const BackwardOptions& options) override {
    last_model = module;
    ++backwards;
    SingleDeviceStrategy::backward(loss, module, options);
  }
};

TEST(Backward, Model_ReachesTheStrategy) {
  auto strategy = std::make_shared<RecordingStrategy>();
  Fabric fabric({.accelerator = "cpu", .strategy = strategy});
  auto model = fabric.setup_module(torch::nn::Linear(3, 1));
  fabric.backward(model(torch::ones({1, 3})).sum(), model);
  EXPECT_EQ(strategy->backwards, 1);
  EXPECT_EQ(strategy->last_model, model.module().get());
  fabric.backward(model(torch::ones({1, 3})).sum());
  EXPECT_EQ(strategy->last_model, nullptr);
}

// Least squares that LBFGS solves in a few steps.
std::pair<torch::Tensor, torch::Tensor> regression_data() {
  torch::manual_seed(3);
  const torch::Tensor x = torch::randn({32, 4});
  return {x, x.matmul(torch::tensor({1.0f, -2.0f, 0.5f, 3.0f})).unsqueeze(1) + 0.25};
}

torch::nn::Linear regression_model() {
  torch::manual_seed(7);
  return torch::nn::Linear(4, 1);
}

TEST(OptimizerStep, Closure_LbfgsEndsWhereLibTorchsLbfgsEnds) {
  const auto [x, y] = regression_data();
  const auto lbfgs = torch::optim::LBFGSOptions(0.5).max_iter(10).history_size(5);

  torch::nn::Linear reference = regression_model();
  torch::optim::LBFGS plain(reference->parameters(), lbfgs);
  std::vector<double> reference_losses;
  for (int step = 0; step < 4; ++step) {
    reference_losses.push_back(plain
                                   .step([&] {
                                     plain.zero_grad();
                                     torch::Tensor loss = torch::mse_loss(reference(x), y);
                                     loss.backward();
                                     return loss;
                                   })
                                   .item<double>());
  }

  Fabric fabric({.accelerator = "cpu"});
  auto [model, optimizer] = fabric.setup(regression_model(), [&](auto params) {
    return std::make_shared<torch::optim::LBFGS>(params, lbfgs);
  });
  for (int step = 0; step < 4; ++step) {
    const torch::Tensor loss = optimizer.step([&] {
      optimizer.zero_grad();
      torch::Tensor loss = torch::mse_loss(model(x), y);
      fabric.backward(loss);
      return loss;
    });
    EXPECT_EQ(loss.item<double>(), reference_losses[static_cast<size_t>(step)]) << "step " << step;
  }
  EXPECT_TRUE(model->weight.equal(reference->weight)) << model->weight << " vs " << reference->weight;
  EXPECT_TRUE(model->bias.equal(reference->bias));
  EXPECT_LT(reference_losses.back(), 1e-3 * reference_losses.front()) << "LBFGS converged: the comparison means something";
}

TEST(OptimizerStep, ClosureOfAPlainOptimizer_IsCalledOnceAndItsLossReturned) {
  Fabric fabric({.accelerator = "cpu"});
  auto [model, optimizer] = fabric.setup(torch::nn::Linear(2, 1), [](auto params) {
    return std::make_shared<torch::optim::SGD>(params, torch::optim::SGDOptions(0.1));
  });
  int calls = 0;
  const torch::Tensor loss = optimizer.step([&] {
    ++calls;
    optimizer.zero_grad();
    torch::Tensor loss = model(torch::ones({1, 2})).sum();
    fabric.backward(loss);
    return loss;
  });
  EXPECT_EQ(calls, 1);
  EXPECT_TRUE(loss.defined());
  EXPECT_THROW(optimizer.step(LossClosure{}), UsageError);
}

TEST(OptimizerStep, ZeroGrad_SetToNoneOrZeros) {
  Fabric fabric({.accelerator = "cpu"});
  auto [model, optimizer] = fabric.setup(torch::nn::Linear(2, 1), [](auto params) {
    return std::make_shared<torch::optim::SGD>(params, torch::optim::SGDOptions(0.1));
  });
  fabric.backward(model(torch::ones({1, 2})).sum());
  optimizer.zero_grad(/*set_to_none=*/false);
  ASSERT_TRUE(model->weight.grad().defined());
  EXPECT_EQ(model->weight.grad().abs().sum().item<double>(), 0.0);
  optimizer.zero_grad();
  EXPECT_FALSE(model->weight.grad().defined());
}

// The run() style: a program derived from Fabric.
struct Trainer : Fabric {
  using Fabric::Fabric;
  double run(int steps, double lr) {
    barrier("inside run");  // a launched-only method: run launched first
    auto [model, optimizer] = setup(regression_model(), [lr](auto params) {
      return std::make_shared<torch::optim::SGD>(params, torch::optim::SGDOptions(lr));
    });
    const auto [x, y] = regression_data();
    double loss = 0;
    for (int step = 0; step < steps; ++step) {
      optimizer.zero_grad();
      torch::Tensor value = torch::mse_loss(model(x), y);
      backward(value);
      optimizer.step();
      loss = value.item<double>();
    }
    return loss;
  }
};

TEST(Run, LaunchesAndReturnsWhatRunReturns) {
  Launched<Trainer> trainer({.accelerator = "cpu", .precision = "64-true"});
  const double few = trainer.run(2, 0.05);
  Launched<Trainer> again({.accelerator = "cpu", .precision = "64-true"});
  EXPECT_LT(again.run(20, 0.05), few) << "run's arguments reach it";
}

// The user's own precision: weights and inputs in float64, outputs back to float32.
struct DoubleEverything : Precision {
  mutable int conversions = 0;
  std::string_view name() const override { return "double-everything"; }
  void convert_module(torch::nn::Module& module) const override {
    ++conversions;
    module.to(torch::kFloat64);
  }
  std::optional<torch::ScalarType> input_dtype() const override { return torch::kFloat64; }
  bool converts_output() const override { return true; }
};

TEST(Instances, PrecisionInstance_IsUsedAsGivenOrAsAPlugin) {
  auto precision = std::make_shared<DoubleEverything>();
  Fabric fabric({.accelerator = "cpu", .precision = precision});
  EXPECT_EQ(fabric.precision().name(), "double-everything");
  auto model = fabric.setup_module(torch::nn::Linear(2, 1));
  EXPECT_EQ(precision->conversions, 1);
  EXPECT_EQ(model->weight.scalar_type(), torch::kFloat64);
  EXPECT_EQ(model(torch::ones({1, 2})).scalar_type(), torch::kFloat32) << "outputs cast back";

  Fabric plugged({.accelerator = "cpu", .plugins = {std::make_shared<DoubleEverything>()}});
  EXPECT_EQ(plugged.precision().name(), "double-everything");
}

// An accelerator of the user's: the CPU under another name, counting setup_device calls.
struct CountingCpu : Accelerator {
  mutable int setups = 0;
  std::string_view name() const override { return "counting-cpu"; }
  torch::DeviceType device_type() const override { return torch::kCPU; }
  bool is_available() const override { return true; }
  int auto_device_count() const override { return 1; }
  std::vector<torch::Device> parse_devices(const Devices&) const override { return {torch::kCPU}; }
  void setup_device(torch::Device) const override { ++setups; }
};

TEST(Instances, AcceleratorInstance_IsTheOneFabricUses) {
  auto accelerator = std::make_shared<CountingCpu>();
  Fabric fabric({.accelerator = accelerator});
  EXPECT_EQ(fabric.accelerator().name(), "counting-cpu");
  fabric.launch();
  fabric.setup_module(torch::nn::Linear(2, 1));
  EXPECT_GE(accelerator->setups, 1);
}

// Who the ranks are, from variables of the user's own launcher.
struct TwoRanksFromMyLauncher : ClusterEnvironment {
  std::string name() const override { return "my-launcher"; }
  bool creates_processes_externally() const override { return true; }
  int world_size() const override { return 2; }
  int global_rank() const override { return 1; }
  int local_rank() const override { return 1; }
  int node_rank() const override { return 0; }
  std::string main_address() const override { return "127.0.0.1"; }
  int main_port() const override { return 1; }
};

TEST(Instances, EnvironmentPlugin_SaysWhoTheRanksAre) {
  auto strategy = std::make_shared<DDPStrategy>(DDPOptions{.bucket_cap_mb = 50, .static_graph = true});
  Fabric fabric({.accelerator = "cpu", .strategy = strategy, .plugins = {std::make_shared<TwoRanksFromMyLauncher>()}});
  EXPECT_EQ(&fabric.strategy(), strategy.get()) << "the instance itself, completed";
  EXPECT_EQ(fabric.world_size(), 2);
  EXPECT_EQ(fabric.global_rank(), 1);
  EXPECT_EQ(fabric.local_rank(), 1);
  EXPECT_EQ(strategy->options().bucket_cap_mb, 50);
  EXPECT_EQ(fabric.precision().name(), "32-true") << "completed with the default precision";
  // The environment's ranks shard the data: rank 1 of 2 reads the odd samples, unshuffled.
  auto loader = fabric.setup_dataloader(torch::data::datasets::TensorDataset(torch::arange(6).unsqueeze(1)),
                                        {.batch_size = 3, .move_to_device = false});
  std::vector<std::int64_t> seen;
  for (auto& batch : loader) {
    for (std::int64_t i = 0; i < batch.data.size(0); ++i) seen.push_back(batch.data[i].item<std::int64_t>());
  }
  EXPECT_EQ(seen, (std::vector<std::int64_t>{1, 3, 5}));
}

TEST(Instances, StringStrategiesAreTheSameClasses) {
  Fabric single({.accelerator = "cpu", .strategy = "single_device"});
  EXPECT_NE(dynamic_cast<SingleDeviceStrategy*>(&single.strategy()), nullptr);
  Fabric ddp({.accelerator = "cpu",
              .strategy = "ddp_find_unused_parameters_true",
              .plugins = {std::make_shared<TwoRanksFromMyLauncher>()}});
  auto* as_ddp = dynamic_cast<DDPStrategy*>(&ddp.strategy());
  ASSERT_NE(as_ddp, nullptr);
  EXPECT_TRUE(as_ddp->options().find_unused_parameters);
}

// Checkpoints kept in memory instead of files: a CheckpointIO of the user's.
struct InMemoryCheckpoints : CheckpointIO {
  std::map<std::string, c10::IValue> files;
  // A deep copy: the state dict's tensors are the module's own.
  void save_checkpoint(const c10::IValue& checkpoint, const std::string& path) override {
    files[path] = checkpoint.deepcopy();
  }
  c10::IValue load_checkpoint(const std::string& path) override {
    auto found = files.find(path);
    if (found == files.end()) throw CheckpointError("no checkpoint " + path);
    return found->second;
  }
  void remove_checkpoint(const std::string& path) override { files.erase(path); }
};

TEST(Instances, CheckpointIoPlugin_WritesAndReadsEveryCheckpoint) {
  auto io = std::make_shared<InMemoryCheckpoints>();
  Fabric fabric({.accelerator = "cpu", .plugins = {io}});
  auto model = fabric.setup_module(torch::nn::Linear(2, 1));
  const std::string path = "/nonexistent/dir/model.ckpt";
  fabric.save(path, {{"model", model}, {"step", 7}});
  ASSERT_EQ(io->files.count(path), 1u) << "the plugin got the checkpoint";
  const torch::Tensor saved = model->weight.detach().clone();
  torch::NoGradGuard no_grad;
  model->weight.zero_();
  State state{{"model", model}};
  const State rest = fabric.load(path, state);
  EXPECT_TRUE(model->weight.equal(saved));
  EXPECT_EQ(rest.get<std::int64_t>("step"), 7);
}

TEST(Instances, TorchCheckpointIo_RemovesAFileOrAFolderAndToleratesNothing) {
  testing::ScopedTempDir dir;
  TorchCheckpointIO io;
  io.save_checkpoint(torch::IValue(torch::ones({2})), dir / "one.pt");
  ASSERT_TRUE(io.load_checkpoint(dir / "one.pt").toTensor().equal(torch::ones({2})));
  ASSERT_EQ(::mkdir((dir / "sharded").c_str(), 0755), 0);
  io.save_checkpoint(torch::IValue(torch::ones({2})), dir / "sharded/shard-0.pt");
  io.remove_checkpoint(dir / "one.pt");
  io.remove_checkpoint(dir / "sharded");
  io.remove_checkpoint(dir / "never-written");
  EXPECT_NE(::access((dir / "one.pt").c_str(), F_OK), 0);
  EXPECT_NE(::access((dir / "sharded").c_str(), F_OK), 0);
}

TEST(Conflicts, TwoPluginsOfOneKind_AreRefused) {
  const std::string error = error_of([] {
    Fabric({.accelerator = "cpu",
            .plugins = {std::make_shared<DoubleEverything>(), std::make_shared<DoubleEverything>()}});
  });
  EXPECT_NE(error.find("Received multiple values for Precision flags in `plugins`"), std::string::npos) << error;
}

TEST(Conflicts, PrecisionStringAndPrecisionPlugin_NameBoth) {
  const std::string error = error_of([] {
    Fabric({.accelerator = "cpu", .precision = "bf16-mixed", .plugins = {std::make_shared<DoubleEverything>()}});
  });
  EXPECT_NE(error.find("precision=\"bf16-mixed\""), std::string::npos) << error;
  EXPECT_NE(error.find("double-everything"), std::string::npos) << error;
  EXPECT_NE(error.find("Choose one"), std::string::npos) << error;
}

TEST(Conflicts, StrategyCarryingAnAcceleratorOrPrecision_AndTheOptionToo) {
  auto with_accelerator = std::make_shared<SingleDeviceStrategy>();
  with_accelerator->set_accelerator(std::make_shared<CountingCpu>());
  std::string error = error_of([&] { Fabric({.accelerator = "cpu", .strategy = with_accelerator}); });
  EXPECT_NE(error.find("counting-cpu"), std::string::npos) << error;
  EXPECT_NE(error.find("accelerator=\"cpu\""), std::string::npos) << error;
  EXPECT_NO_THROW(Fabric({.strategy = with_accelerator})) << "given once, through the strategy";

  auto with_precision = std::make_shared<SingleDeviceStrategy>();
  with_precision->set_precision(std::make_shared<DoubleEverything>());
  error = error_of([&] { Fabric({.accelerator = "cpu", .strategy = with_precision, .precision = "64-true"}); });
  EXPECT_NE(error.find("double-everything"), std::string::npos) << error;
  EXPECT_NE(error.find("precision=\"64-true\""), std::string::npos) << error;
}

TEST(Conflicts, SingleDeviceInstanceOnSeveralDevices_IsRefused) {
  const std::string error = error_of([] {
    Fabric({.accelerator = "cpu", .strategy = std::make_shared<SingleDeviceStrategy>(), .devices = 2});
  });
  EXPECT_NE(error.find("single_device"), std::string::npos) << error;
  EXPECT_NE(error.find("2 device(s)"), std::string::npos) << error;
}

torch::Tensor cpu_generator_state() { return at::detail::getDefaultCPUGenerator().get_state(); }

TEST(InitModule, EmptyInit_SkipsTheRandomFillsAndNothingElse) {
  Fabric fabric({.accelerator = "cpu"});
  torch::Tensor kept = torch::full({2, 2}, 7.0f);
  torch::manual_seed(11);
  const torch::Tensor generator_before = cpu_generator_state();
  torch::nn::BatchNorm1d norm = nullptr;
  {
    auto empty = fabric.init_module(/*empty_init=*/true);
    torch::nn::init::kaiming_uniform_(kept);
    torch::nn::init::normal_(kept);
    torch::nn::Linear(512, 512);
    norm = torch::nn::BatchNorm1d(8);
  }
  EXPECT_TRUE(kept.equal(torch::full({2, 2}, 7.0f))) << "the fills left it alone";
  EXPECT_TRUE(cpu_generator_state().equal(generator_before)) << "no random number was drawn";
  EXPECT_TRUE(norm->running_var.equal(torch::ones({8}))) << "deterministic fills still run";
  EXPECT_TRUE(norm->weight.equal(torch::ones({8})));
  torch::nn::init::uniform_(kept);
  EXPECT_FALSE(kept.equal(torch::full({2, 2}, 7.0f))) << "after the scope, initialisation is back";
  {
    auto normal = fabric.init_module();
    torch::nn::Linear(4, 4);
  }
  EXPECT_FALSE(cpu_generator_state().equal(generator_before)) << "without empty_init, weights are drawn";
}

TEST(DdpOptions, InvalidValues_SayWhatIsValid) {
  std::string error = error_of([] { DDPStrategy(DDPOptions{.bucket_cap_mb = 0}); });
  EXPECT_NE(error.find("bucket_cap_mb"), std::string::npos) << error;
  const auto plugins = std::vector<Plugin>{std::make_shared<TwoRanksFromMyLauncher>()};
  error = error_of([&] {
    Fabric({.accelerator = "cpu",
            .strategy = std::make_shared<DDPStrategy>(DDPOptions{.process_group_backend = "nccl"}),
            .plugins = plugins});
  });
  EXPECT_NE(error.find("\"nccl\" carries CUDA tensors only"), std::string::npos) << error;
  error = error_of([&] {
    Fabric({.accelerator = "cpu",
            .strategy = std::make_shared<DDPStrategy>(DDPOptions{.process_group_backend = "mpi"}),
            .plugins = plugins});
  });
  EXPECT_NE(error.find("\"gloo\" (CPU tensors), \"nccl\" (CUDA tensors)"), std::string::npos) << error;
}

}  // namespace
}  // namespace fabric
