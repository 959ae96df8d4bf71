// Every option Fabric is constructed with is validated there, with a message that names
// the bad value and lists the valid ones; "auto" resolves as Lightning resolves it.
#include <gtest/gtest.h>
#include <torch/cuda.h>

#include <cstdlib>

#include "accelerators/device_parser.h"
#include "fabric/fabric.h"

namespace fabric {
namespace {

// Constructs Fabric and returns the ConfigurationError's message ("" if none was thrown).
std::string error_for(FabricOptions options) {
  try {
    Fabric fabric(std::move(options));
  } catch (const ConfigurationError& error) {
    return error.what();
  }
  return "";
}

void expect_contains(const std::string& text, const std::string& part) {
  EXPECT_NE(text.find(part), std::string::npos) << "'" << part << "' not in: " << text;
}

TEST(Options, Defaults_ResolveToOneCpuDeviceAt32True) {
  if (torch::cuda::is_available()) GTEST_SKIP() << "auto picks CUDA on this machine";
  Fabric fabric;
  EXPECT_EQ(fabric.accelerator().name(), "cpu");
  EXPECT_EQ(fabric.strategy().name(), "single_device");
  EXPECT_EQ(fabric.precision().name(), "32-true");
  EXPECT_EQ(fabric.device(), torch::Device(torch::kCPU));
  EXPECT_EQ(fabric.world_size(), 1);
  EXPECT_EQ(fabric.global_rank(), 0);
  EXPECT_TRUE(fabric.is_global_zero());
}

TEST(Options, PrecisionAliases_MapToCanonicalNames) {
  const std::vector<std::pair<PrecisionInput, std::string>> cases = {
      {64, "64-true"},          {32, "32-true"},           {"64", "64-true"},         {"32", "32-true"},
      {"bf16", "bf16-mixed"},   {"16-true", "16-true"},    {"bf16-true", "bf16-true"}, {"", "32-true"},
      {16, "bf16-mixed"},  // "16" => "16-mixed" => bf16-mixed on the CPU
  };
  for (const auto& [input, expected] : cases) {
    Fabric fabric({.accelerator = "cpu", .precision = input});
    EXPECT_EQ(fabric.precision().name(), expected) << "precision=" << input.value();
  }
}

TEST(Options, InvalidPrecision_ListsEveryValidValue) {
  const std::string message = error_for({.precision = "17"});
  expect_contains(message, "\"17\" is invalid");
  for (const auto& valid : valid_precision_inputs()) expect_contains(message, "\"" + valid + "\"");
  expect_contains(error_for({.precision = 8}), "\"8\" is invalid");
  expect_contains(error_for({.precision = "transformer-engine"}), "Transformer Engine");
}

TEST(Options, InvalidAccelerator_ListsTheValidNames) {
  const std::string message = error_for({.accelerator = "banana"});
  expect_contains(message, "invalid accelerator name");
  expect_contains(message, "\"cpu\", \"cuda\", \"gpu\"");
  expect_contains(error_for({.accelerator = "mps"}), "not supported by Fabric for C++");
  expect_contains(error_for({.accelerator = "tpu"}), "not supported by Fabric for C++");
}

TEST(Options, UnavailableCuda_IsRefusedWithWhatToUseInstead) {
  if (torch::cuda::is_available()) GTEST_SKIP() << "CUDA is available here";
  expect_contains(error_for({.accelerator = "cuda"}), "accelerator=\"cuda\" is not available");
  expect_contains(error_for({.accelerator = "gpu"}), "no supported GPU backend");
}

TEST(Options, AcceleratorAndStrategyNames_AreCaseInsensitive) {
  Fabric fabric({.accelerator = "CPU", .strategy = "Single_Device"});
  EXPECT_EQ(fabric.strategy().name(), "single_device");
}

TEST(Options, InvalidStrategy_ListsTheValidNames) {
  const std::string message = error_for({.strategy = "magic"});
  expect_contains(message, "invalid strategy name");
  expect_contains(message, "\"auto\", \"single_device\"");
  expect_contains(message, "\"fsdp\"");
  expect_contains(error_for({.strategy = "fsdp_cpu_offload"}), "does not provide");
  expect_contains(error_for({.strategy = "deepspeed"}), "does not provide");
}

TEST(Options, ZeroDevices_AreRefusedInEveryForm) {
  for (const Devices& devices : {Devices(0), Devices("0"), Devices(std::vector<int>{})}) {
    expect_contains(error_for({.accelerator = "cpu", .devices = devices}), "is not a valid input");
  }
}

TEST(Options, CpuDevices_MustBeAPositiveCount) {
  expect_contains(error_for({.accelerator = "cpu", .devices = -1}), "should be an int > 0");
  expect_contains(error_for({.accelerator = "cpu", .devices = "0,1"}), "should be an int > 0");
  expect_contains(error_for({.accelerator = "cpu", .devices = {0, 1}}), "should be an int > 0");
  expect_contains(error_for({.accelerator = "cpu", .devices = "two"}), "should be an int > 0");
  Fabric fabric({.accelerator = "cpu", .devices = "1"});
  EXPECT_EQ(fabric.device(), torch::Device(torch::kCPU));
}

TEST(Options, SeveralDevicesOrNodes_ChooseDdpThatMustBeLaunched) {
  Fabric fabric({.accelerator = "cpu", .devices = 2});
  EXPECT_EQ(fabric.strategy().name(), "ddp");
  EXPECT_EQ(fabric.world_size(), 2);
  try {
    fabric.setup_module(torch::nn::Linear(2, 2));
    FAIL() << "setup before launch() must be refused under ddp";
  } catch (const UsageError& error) {
    EXPECT_NE(std::string(error.what()).find("call fabric.launch()"), std::string::npos) << error.what();
  }
  expect_contains(error_for({.accelerator = "cpu", .strategy = "single_device", .devices = 2}),
                  "Use strategy=\"ddp\"");
  expect_contains(error_for({.accelerator = "cpu", .strategy = "ddp_spawn"}), "re-executes the program");
  expect_contains(error_for({.accelerator = "cpu", .num_nodes = 0}), "num_nodes=0 is not valid");
}

TEST(Options, EnvironmentOverrides_ReplaceConstructorValues) {
  ::setenv("LT_PRECISION", "64-true", 1);
  Fabric fabric({.accelerator = "cpu", .precision = "32-true"});
  ::unsetenv("LT_PRECISION");
  EXPECT_EQ(fabric.precision().name(), "64-true");
  ::setenv("LT_NUM_NODES", "x", 1);
  expect_contains(error_for({.accelerator = "cpu"}), "LT_NUM_NODES='x' is not an integer");
  ::unsetenv("LT_NUM_NODES");
}

TEST(DeviceParser, GpuIds_FollowLightningsRules) {
  using accelerators::parse_gpu_ids;
  EXPECT_EQ(parse_gpu_ids(2, 4), (std::vector<int>{0, 1}));
  EXPECT_EQ(parse_gpu_ids("2", 4), (std::vector<int>{0, 1})) << "a digit string is a count";
  EXPECT_EQ(parse_gpu_ids("2,", 4), (std::vector<int>{2})) << "a comma makes it an index list";
  EXPECT_EQ(parse_gpu_ids("1, 3", 4), (std::vector<int>{1, 3}));
  EXPECT_EQ(parse_gpu_ids({3}, 4), (std::vector<int>{3}));
  EXPECT_EQ(parse_gpu_ids(-1, 3), (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(parse_gpu_ids("-1", 2), (std::vector<int>{0, 1}));
  EXPECT_THROW(parse_gpu_ids({1, 1}, 4), ConfigurationError);
  EXPECT_THROW(parse_gpu_ids({4}, 4), ConfigurationError);
  EXPECT_THROW(parse_gpu_ids(-1, 0), ConfigurationError);
  EXPECT_THROW(parse_gpu_ids("a,b", 4), ConfigurationError);
}

}  // namespace
}  // namespace fabric
