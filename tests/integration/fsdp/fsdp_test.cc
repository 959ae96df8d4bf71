// FSDP across real processes against DDP: the same model and batches, trained 20 steps
// with each, end at the same parameters and optimizer state (1e-6 relative) for every
// sharding strategy, float32 and float64, at 2 and 4 ranks; sharded folders reshard
// 2 -> 4 -> 1 exactly; a folder with a missing or truncated shard loads nothing.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>
#include <torch/torch.h>

#include <fstream>
#include <map>
#include <tuple>

#include "fabric/fabric.h"
#include "fabric/strategies.h"
#include "fsdp_model.h"
#include "support/processes.h"

namespace fabric {
namespace {

using testing::exit_code;
using testing::read_file;

// Each rank's output, once it exited `expected_exit`.
std::vector<std::string> run_ranks(int world, std::vector<std::string> args, int expected_exit = 0) {
  auto ranks = testing::start_ranks(FSDP_WORKER, world, std::move(args));
  std::vector<std::string> outputs;
  for (std::size_t r = 0; r < ranks.size(); ++r) {
    const int code = exit_code(ranks[r], std::chrono::seconds(300));
    outputs.push_back(read_file(ranks[r].output));
    EXPECT_EQ(code, expected_exit) << "rank " << r << ": " << outputs.back();
    ::unlink(ranks[r].output.c_str());
  }
  return outputs;
}

// Every tensor of a saved checkpoint, by its path ("model/body.0.weight",
// "optimizer/state/3/exp_avg"), read back by a plain Fabric.
std::map<std::string, torch::Tensor> tensors_of(const std::string& path) {
  std::map<std::string, torch::Tensor> tensors;
  std::function<void(const std::string&, const torch::IValue&)> walk = [&](const std::string& prefix,
                                                                           const torch::IValue& value) {
    if (value.isTensor()) tensors[prefix] = value.toTensor();
    if (value.isGenericDict()) {
      for (const auto& entry : value.toGenericDict()) {
        const std::string key = entry.key().isString() ? entry.key().toStringRef() : c10::str(entry.key());
        walk(prefix + "/" + key, entry.value());
      }
    }
  };
  Fabric reader({.accelerator = "cpu"});
  for (const auto& [key, value] : reader.load(path)) walk(key, value.value());
  return tensors;
}

void expect_close(const std::map<std::string, torch::Tensor>& ours, const std::map<std::string, torch::Tensor>& expected,
                  double relative) {
  ASSERT_EQ(ours.size(), expected.size());
  for (const auto& [name, want] : expected) {
    ASSERT_TRUE(ours.count(name)) << name << " missing";
    const auto& got = ours.at(name);
    ASSERT_EQ(got.sizes(), want.sizes()) << name;
    ASSERT_EQ(got.scalar_type(), want.scalar_type()) << name;
    const double scale = want.numel() ? want.abs().max().item<double>() : 0.0;
    const double error = want.numel() ? (got.to(torch::kFloat64) - want.to(torch::kFloat64)).abs().max().item<double>() : 0.0;
    EXPECT_LE(error, relative * scale) << name << ": max error " << error << " at scale " << scale;
  }
}

// DDP's result for (world, precision, accumulate), trained once per test program.
const std::string& ddp_reference(int world, const std::string& precision, bool accumulate) {
  static std::map<std::tuple<int, std::string, bool>, std::string> done;
  static testing::ScopedTempDir dir;
  auto& path = done[{world, precision, accumulate}];
  if (path.empty()) {
    path = dir / ("ddp-" + std::to_string(world) + precision + (accumulate ? "-acc" : "") + ".pt");
    std::vector<std::string> args{"train", "ddp", "-", precision, "20", path};
    if (accumulate) args.push_back("accumulate");
    run_ranks(world, args);
  }
  return path;
}

using ParityCase = std::tuple<int, std::string, std::string>;  // world, sharding, precision
class FsdpParity : public ::testing::TestWithParam<ParityCase> {};

TEST_P(FsdpParity, EndsWhereDdpEndsAfterTwentySteps) {
  const auto& [world, sharding, precision] = GetParam();
  testing::ScopedTempDir dir;
  const std::string out = dir / "fsdp.pt";
  run_ranks(world, {"train", "fsdp", sharding, precision, "20", out});
  const auto ours = tensors_of(out);
  const auto reference = tensors_of(ddp_reference(world, precision, false));
  expect_close(ours, reference, 1e-6);
  // The parameters moved: a check that would pass for an untrained model checks nothing.
  auto untrained = fsdp_model::build_model();
  EXPECT_FALSE(ours.at("model/body.0.weight").to(torch::kFloat32).allclose(untrained->body[0]->as<torch::nn::Linear>()->weight));
}

INSTANTIATE_TEST_SUITE_P(
    ShardingsPrecisionsWorlds, FsdpParity,
    ::testing::Values(ParityCase{2, "FULL_SHARD", "32-true"}, ParityCase{2, "FULL_SHARD", "64-true"},
                      ParityCase{2, "SHARD_GRAD_OP", "32-true"}, ParityCase{2, "SHARD_GRAD_OP", "64-true"},
                      ParityCase{4, "FULL_SHARD", "32-true"}, ParityCase{4, "FULL_SHARD", "64-true"},
                      ParityCase{4, "SHARD_GRAD_OP", "32-true"}, ParityCase{4, "SHARD_GRAD_OP", "64-true"},
                      ParityCase{2, "NO_SHARD", "32-true"}),
    [](const auto& info) {
      return std::get<1>(info.param) + "_" + std::to_string(std::get<0>(info.param)) + "_ranks_" +
             (std::get<2>(info.param) == "32-true" ? "float32" : "float64");
    });

// Sizes of fsdp_model's parameters: body.0 (16x32 + 32), body.2 (32x24 + 24), body.4 (24x4 + 4), scale (4).
TEST(Fsdp, FollowsLightningsRulesForShardedModels) {
  const auto outputs = run_ranks(2, {"rules"});
  for (const auto& output : outputs) {
    EXPECT_NE(output.find("optimizer first: fsdp: the optimizer holds a parameter of no module set up with this "
                          "strategy. A sharded model's parameters change when it is set up, so call "
                          "setup_module(model) first"),
              std::string::npos) << output;
    // One unit per Linear (the auto-wrap policy), the root's own parameter last.
    EXPECT_NE(output.find("unit: body.0.weight body.0.bias\nunit: body.2.weight body.2.bias\n"
                          "unit: body.4.weight body.4.bias\nunit: scale\n"),
              std::string::npos) << output;
    EXPECT_NE(output.find("sharding: sharding_strategy=\"HYBRID_SHARD\" is not one Fabric for C++ has"),
              std::string::npos) << output;
  }
  // Each unit padded to 2 x ceil(n / 2): rank 0 holds the first half, rank 1 the rest.
  // body.0: 544 -> 272 | 272 (weight 512 = 272 + 240, bias 32 = 0 + 32); body.2: 792 -> 396 |
  // 396 (weight 768 = 396 + 372, bias 24 = 0 + 24); body.4: 100 -> 50 | 50 (96 = 50 + 46,
  // 4 = 0 + 4); scale: 4 -> 2 | 2. In parameters() order: the root's own first.
  EXPECT_NE(outputs[0].find("pieces: 2 272 0 396 0 50 0\n"), std::string::npos) << outputs[0];
  EXPECT_NE(outputs[1].find("pieces: 2 240 32 372 24 46 4\n"), std::string::npos) << outputs[1];
}

TEST(Fsdp, NoBackwardSyncAccumulatesAsDdpDoes) {
  testing::ScopedTempDir dir;
  const std::string out = dir / "fsdp.pt";
  run_ranks(2, {"train", "fsdp", "FULL_SHARD", "32-true", "20", out, "accumulate"});
  expect_close(tensors_of(out), tensors_of(ddp_reference(2, "32-true", true)), 1e-6);
}

std::vector<std::string> files_in(const std::string& folder) {
  std::vector<std::string> names;
  for (const std::string name : {"index.pt", "rank-0.pt", "rank-1.pt", "rank-2.pt", "rank-3.pt", "rank-4.pt"}) {
    struct stat info;
    if (::stat((folder + "/" + name).c_str(), &info) == 0) names.push_back(name);
  }
  return names;
}

TEST(FsdpCheckpoint, ReshardsTwoToFourToOneExactly) {
  testing::ScopedTempDir dir;
  const std::string two = dir / "two", four = dir / "four", one = dir / "one.pt", original = dir / "original.pt";
  run_ranks(2, {"save-sharded", "5", two, original});
  EXPECT_EQ(files_in(two), (std::vector<std::string>{"index.pt", "rank-0.pt", "rank-1.pt"}));
  run_ranks(4, {"reshard", two, four, "sharded"});
  EXPECT_EQ(files_in(four), (std::vector<std::string>{"index.pt", "rank-0.pt", "rank-1.pt", "rank-2.pt", "rank-3.pt"}));
  run_ranks(1, {"reshard", four, one, "full"});
  expect_close(tensors_of(one), tensors_of(original), 0.0);  // bit for bit
  EXPECT_EQ(tensors_of(original).count("optimizer/state/0/exp_avg"), 1u);
}

// A sharded folder from 2 ranks with rank 1's file damaged by `damage`; every rank must
// refuse it, naming the rank that found the damage, and leave its model as it was.
void expect_refused(const std::function<void(const std::string&)>& damage, int finder, const std::string& reason) {
  testing::ScopedTempDir dir;
  const std::string folder = dir / "ckpt";
  run_ranks(2, {"save-sharded", "2", folder, dir / "full.pt"});
  damage(folder + "/rank-1.pt");
  for (const auto& output : run_ranks(2, {"load-sharded", folder}, 3)) {
    EXPECT_NE(output.find("refused: Loading " + folder + " failed on rank " + std::to_string(finder) +
                          ", so no rank loaded anything"),
              std::string::npos) << output;
    EXPECT_NE(output.find(reason), std::string::npos) << output;
    EXPECT_NE(output.find("model unchanged"), std::string::npos) << output;
  }
}

TEST(FsdpCheckpoint, AMissingShardIsRefusedAndNothingLoads) {
  // Every rank checks that all files are there: rank 0 reports it first.
  expect_refused([](const std::string& file) { ASSERT_EQ(::unlink(file.c_str()), 0); }, 0,
                 "was written by 2 ranks but rank-1.pt is missing");
}

TEST(FsdpCheckpoint, ATruncatedShardIsRefusedAndNothingLoads) {
  expect_refused(
      [](const std::string& file) {
        struct stat info;
        ASSERT_EQ(::stat(file.c_str(), &info), 0);
        ASSERT_EQ(::truncate(file.c_str(), info.st_size / 2), 0);
      },
      // Only rank 1 reads rank 1's file (rank 0's pieces are all in rank-0.pt), so only
      // it can see the damage: rank 0 refuses because rank 1 did.
      1, "/rank-1.pt is truncated or corrupt");
}

// Each rank limits its own address space (as ulimit -v) to less than what training the
// model unsharded takes: fsdp at 4 ranks trains, ddp under the same limit cannot.
TEST(FsdpMemory, AModelThatDoesNotFitOneProcessTrainsSharded) {
  for (const auto& output : run_ranks(4, {"limited", "fsdp"})) {
    EXPECT_NE(output.find("limit: 251 MB over what was mapped; unsharded training needs 402 MB"), std::string::npos)
        << output;
    EXPECT_NE(output.find("trained: loss"), std::string::npos) << output;
  }
  auto ranks = testing::start_ranks(FSDP_WORKER, 4, {"limited", "ddp"});
  int out_of_memory = 0;
  for (auto& rank : ranks) {
    const int code = exit_code(rank, std::chrono::seconds(300));
    const std::string output = read_file(rank.output);
    EXPECT_EQ(output.find("trained:"), std::string::npos) << output;
    EXPECT_NE(code, 0) << output;
    if (output.find("DefaultCPUAllocator: can't allocate memory") != std::string::npos) ++out_of_memory;
    ::unlink(rank.output.c_str());
  }
  // Every rank needs the same memory, so each fails its own allocation (none only waits for a
  // peer that died).
  EXPECT_EQ(out_of_memory, 4) << "ddp should have run out of memory under the limit on every rank";
}

}  // namespace
}  // namespace fabric
