// fabric.save / load / load_raw: Lightning Fabric's semantics (reference §2 save/load),
// files that Python's torch.load opens and Python files that load here, exact resume in a
// new process, and crash safety under SIGKILL.
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>
#include <torch/torch.h>

#include <chrono>
#include <fstream>
#include <random>
#include <thread>

#include "fabric/fabric.h"
#include "support/python.h"

extern char** environ;

namespace fabric {
namespace {

using testing::ScopedTempDir;

// The same architecture as python_interop.py's build_model().
torch::nn::Sequential build_model() {
  return torch::nn::Sequential(torch::nn::Linear(16, 32), torch::nn::BatchNorm1d(32), torch::nn::Tanh(),
                               torch::nn::Linear(32, 4));
}

torch::Tensor fixed_input() { return torch::linspace(-1, 1, 4 * 16).reshape({4, 16}); }

std::vector<torch::Tensor> snapshot(const torch::nn::Module& module) {
  std::vector<torch::Tensor> copies;
  for (const auto& tensor : module.parameters()) copies.push_back(tensor.detach().clone());
  for (const auto& tensor : module.buffers()) copies.push_back(tensor.detach().clone());
  return copies;
}

void expect_unchanged(const torch::nn::Module& module, const std::vector<torch::Tensor>& before) {
  auto after = snapshot(module);
  ASSERT_EQ(after.size(), before.size());
  for (size_t i = 0; i < after.size(); ++i) EXPECT_TRUE(torch::equal(after[i], before[i])) << "tensor " << i;
}

std::string message_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const CheckpointError& error) {
    return error.what();
  }
  return "";
}

class Checkpoint : public ::testing::Test {
 protected:
  Fabric fabric{{.accelerator = "cpu"}};
  ScopedTempDir dir;
  std::string path(const std::string& name) const { return dir / name; }
};

TEST_F(Checkpoint, SaveLoad_RestoresModulesOptimizersAndPlainValuesInPlace) {
  auto [model, optimizer] = fabric.setup(build_model(), [](auto params) {
    return std::make_shared<torch::optim::AdamW>(params, torch::optim::AdamWOptions(0.01));
  });
  fabric.backward(model(torch::randn({8, 16})).sum());
  optimizer.step();
  fabric.save(path("ckpt.pt"), {{"model", model}, {"optimizer", optimizer}, {"epoch", 4}, {"name", "run-1"},
                                {"nested", State{{"lr", 0.5}, {"flag", true}}}});
  const auto saved = snapshot(*model);

  torch::manual_seed(123);  // different initial weights
  auto [fresh, fresh_optimizer] = fabric.setup(build_model(), [](auto params) {
    return std::make_shared<torch::optim::AdamW>(params, torch::optim::AdamWOptions(0.9));
  });
  State state{{"model", fresh}, {"optimizer", fresh_optimizer}, {"epoch", 0}, {"nested", State{{"lr", 0.0}}}};
  State remainder = fabric.load(path("ckpt.pt"), state);

  expect_unchanged(*fresh, saved);
  EXPECT_EQ(state.get<int>("epoch"), 4) << "plain values come back into the caller's state";
  EXPECT_DOUBLE_EQ(state.at("nested").state().get<double>("lr"), 0.5);
  EXPECT_EQ(fresh_optimizer.as<torch::optim::AdamW>().param_groups()[0].options().get_lr(), 0.01);
  EXPECT_EQ(fresh_optimizer->state().size(), fresh.parameters().size());
  EXPECT_EQ(remainder.keys(), (std::vector<std::string>{"name"})) << "load returns what was not asked for";
  EXPECT_EQ(remainder.get<std::string>("name"), "run-1");
}

TEST_F(Checkpoint, LoadWithoutState_ReturnsTheWholeCheckpoint) {
  fabric.save(path("ckpt.pt"), {{"a", 1}, {"b", torch::ones({2})}});
  State whole = fabric.load(path("ckpt.pt"));
  EXPECT_EQ(whole.keys(), (std::vector<std::string>{"a", "b"}));
  EXPECT_TRUE(torch::equal(whole.get<torch::Tensor>("b"), torch::ones({2})));
}

TEST_F(Checkpoint, StrictLoad_MissingKeyIsAnErrorAndChangesNothing) {
  auto model = fabric.setup_module(build_model());
  fabric.save(path("ckpt.pt"), {{"model", model}});
  torch::manual_seed(9);
  auto other = fabric.setup_module(build_model());
  const auto before = snapshot(*other);
  State state{{"model", other}, {"epoch", 0}};
  const std::string message = message_of([&] { fabric.load(path("ckpt.pt"), state); });
  EXPECT_NE(message.find("'epoch'"), std::string::npos) << message;
  EXPECT_NE(message.find("strict=false"), std::string::npos) << message;
  expect_unchanged(*other, before);  // the model was valid, but nothing is committed on error

  State lenient{{"model", other}, {"epoch", 5}};
  fabric.load(path("ckpt.pt"), lenient, /*strict=*/false);
  EXPECT_EQ(lenient.get<int>("epoch"), 5) << "a missing key is skipped when not strict";
}

TEST_F(Checkpoint, ModuleMismatch_NamesTheKeysAndLeavesTheModuleAlone) {
  fabric.save(path("ckpt.pt"), {{"model", torch::nn::Sequential(torch::nn::Linear(16, 32))}});
  auto model = build_model();
  const auto before = snapshot(*model);
  State state{{"model", model}};
  const std::string message = message_of([&] { fabric.load(path("ckpt.pt"), state); });
  EXPECT_NE(message.find("missing key(s)"), std::string::npos) << message;
  EXPECT_NE(message.find("\"3.weight\""), std::string::npos) << message;
  expect_unchanged(*model, before);

  fabric.save(path("wide.pt"), {{"model", torch::nn::Sequential(torch::nn::Linear(16, 33))}});
  const std::string shapes = message_of([&] { fabric.load(path("wide.pt"), state, /*strict=*/false); });
  EXPECT_NE(shapes.find("size mismatch for 0.weight"), std::string::npos) << shapes;
  expect_unchanged(*model, before);
}

TEST_F(Checkpoint, Filter_KeepsSelectedEntriesAndDropsKeysLeftEmpty) {
  auto model = build_model();
  fabric.save(path("ckpt.pt"), {{"model", model}, {"other", model}, {"step", 3}},
              {{"model", [](const std::string& key, const torch::IValue&) { return key.rfind("0.", 0) == 0; }},
               {"other", [](const std::string&, const torch::IValue&) { return false; }}});
  State whole = fabric.load(path("ckpt.pt"));
  EXPECT_EQ(whole.keys(), (std::vector<std::string>{"model", "step"})) << "'other' kept nothing and is omitted";
  auto kept = whole.get<torch::IValue>("model").toGenericDict();
  EXPECT_EQ(kept.size(), 2u);
  EXPECT_TRUE(kept.contains("0.weight") && kept.contains("0.bias"));
  EXPECT_THROW(fabric.save(path("x.pt"), {{"step", 1}}, {{"model", [](auto&, auto&) { return true; }}}), UsageError);
}

TEST_F(Checkpoint, TruncatedCorruptOrForeignFiles_AreErrorsNamingTheFile) {
  auto model = fabric.setup_module(build_model());
  fabric.save(path("good.pt"), {{"model", model}});
  std::ifstream in(path("good.pt"), std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::ofstream(path("truncated.pt"), std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  std::string flipped = bytes;
  flipped[flipped.size() / 3] ^= 0x5a;  // inside the tensor data
  std::ofstream(path("corrupt.pt"), std::ios::binary) << flipped;
  std::ofstream(path("foreign.pt")) << "this is not a checkpoint\n";

  torch::manual_seed(77);
  auto other = fabric.setup_module(build_model());
  const auto before = snapshot(*other);
  for (const char* name : {"truncated.pt", "corrupt.pt", "foreign.pt", "missing.pt"}) {
    State state{{"model", other}};
    const std::string message = message_of([&] { fabric.load(path(name), state); });
    EXPECT_NE(message.find(name), std::string::npos) << name << ": " << message;
    expect_unchanged(*other, before);
  }
}

TEST_F(Checkpoint, LargeRecordsReadOnSeveralThreads_StillCatchAFlippedByteInAnyPiece) {
  const int threads = at::get_num_threads();
  at::set_num_threads(2);  // records of 16 MiB and more are read on two threads
  const torch::Tensor large = torch::arange(6 << 20, torch::kFloat32);  // 24 MiB: 24 pieces
  fabric.save(path("large.pt"), {{"large", large}});
  EXPECT_TRUE(torch::equal(fabric.load(path("large.pt")).get<torch::Tensor>("large"), large));

  std::ifstream in(path("large.pt"), std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // The tensor is all but a few KiB of the file: these land in its first, a middle and its
  // last 1 MiB piece.
  for (const double where : {0.01, 0.5, 0.99}) {
    std::string flipped = bytes;
    flipped[static_cast<std::size_t>(static_cast<double>(bytes.size()) * where)] ^= 0x01;
    std::ofstream(path("flipped.pt"), std::ios::binary) << flipped;
    const std::string message = message_of([&] { fabric.load(path("flipped.pt")); });
    EXPECT_NE(message.find("does not match its checksum"), std::string::npos) << where << ": " << message;
  }
  at::set_num_threads(threads);
}

TEST_F(Checkpoint, PythonOpensOurCheckpointsSafelyWithTheSameNamesAndOutputs) {
  torch::manual_seed(3);
  auto [model, optimizer] =
      fabric.setup(build_model(), [](auto params) { return std::make_shared<torch::optim::Adam>(params); });
  fabric.backward(model(torch::randn({8, 16})).sum());  // train mode: BatchNorm statistics move
  optimizer.step();
  fabric.save(path("cpp.pt"), {{"model", model}, {"optimizer", optimizer}, {"epoch", 7}, {"name", "digits"}});
  ASSERT_EQ(testing::run_python("tests/unit/checkpoint/python_interop.py",
                                "read-cpp " + path("cpp.pt") + " " + path("python_output.pt")),
            0);
  model.eval();
  torch::NoGradGuard no_grad;
  torch::Tensor ours = model(fixed_input());
  torch::Tensor theirs = testing::load_torch_file(path("python_output.pt")).toTensor();
  EXPECT_TRUE(torch::allclose(ours, theirs, 1e-6, 1e-6)) << ours << theirs;
}

TEST_F(Checkpoint, PythonStateDictsLoadIntoTheCppModel) {
  ASSERT_EQ(testing::run_python("tests/unit/checkpoint/python_interop.py", "write-py " + dir.path()), 0);
  auto [model, optimizer] =
      fabric.setup(build_model(), [](auto params) { return std::make_shared<torch::optim::AdamW>(params); });
  fabric.load_raw(path("state_dict.pt"), model);  // torch.save(model.state_dict()): an OrderedDict
  model.eval();
  torch::NoGradGuard no_grad;
  torch::Tensor expected = testing::load_torch_file(path("output.pt")).toTensor();
  EXPECT_TRUE(torch::allclose(model(fixed_input()), expected, 1e-6, 1e-6));

  torch::manual_seed(11);
  auto [again, again_optimizer] =
      fabric.setup(build_model(), [](auto params) { return std::make_shared<torch::optim::AdamW>(params); });
  State state{{"model", again}, {"optimizer", again_optimizer}, {"epoch", 0}};
  fabric.load(path("checkpoint.pt"), state);
  EXPECT_EQ(state.get<int>("epoch"), 3);
  EXPECT_EQ(again_optimizer->state().size(), again.parameters().size()) << "Python's AdamW state loads too";
  again.eval();
  EXPECT_TRUE(torch::allclose(again(fixed_input()), expected, 1e-6, 1e-6));
}

// Runs CHECKPOINT_HELPER with `args`; returns its exit status.
int run_helper(const std::vector<std::string>& args) {
  std::string command = CHECKPOINT_HELPER;
  for (const auto& arg : args) command += " " + arg;
  return std::system(command.c_str());
}

std::vector<torch::Tensor> saved_parameters(Fabric& fabric, const std::string& file) {
  auto dict = fabric.load(file).get<torch::IValue>("model").toGenericDict();
  std::vector<torch::Tensor> tensors;
  for (const auto& entry : dict) tensors.push_back(entry.value().toTensor());
  return tensors;
}

class Resume : public Checkpoint, public ::testing::WithParamInterface<std::string> {};

TEST_P(Resume, NStepsSavedThenMInANewProcess_EqualsNPlusMBitForBit) {
  const std::string optimizer = GetParam();
  ASSERT_EQ(run_helper({"train", optimizer, "12", path("straight.pt")}), 0);
  ASSERT_EQ(run_helper({"train", optimizer, "5", path("first.pt")}), 0);
  ASSERT_EQ(run_helper({"resume", optimizer, path("first.pt"), "7", path("resumed.pt")}), 0);
  auto straight = saved_parameters(fabric, path("straight.pt"));
  auto resumed = saved_parameters(fabric, path("resumed.pt"));
  ASSERT_EQ(straight.size(), resumed.size());
  for (size_t i = 0; i < straight.size(); ++i) EXPECT_TRUE(torch::equal(straight[i], resumed[i])) << "tensor " << i;
  EXPECT_EQ(fabric.load(path("resumed.pt")).get<int>("step"), 12);
}

INSTANTIATE_TEST_SUITE_P(Optimizers, Resume, ::testing::Values("sgd", "adam", "adamw"));

TEST_F(Checkpoint, KilledMidSave_TheFileIsAlwaysACompleteCheckpoint) {
  const std::string file = path("ckpt.pt");
  fabric.save(file, {{"model", torch::nn::Sequential(torch::nn::Linear(1024, 1024))}, {"counter", -1}});
  std::mt19937 random(std::random_device{}());
  std::int64_t last_counter = -1;
  for (int kill = 0; kill < 12; ++kill) {
    pid_t pid = 0;
    std::string helper = CHECKPOINT_HELPER, mode = "save-forever", start = std::to_string(last_counter + 1);
    std::vector<char*> argv = {helper.data(), mode.data(), const_cast<char*>(file.c_str()), start.data(), nullptr};
    int pipe_fds[2];
    ASSERT_EQ(::pipe(pipe_fds), 0);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], 1);
    posix_spawn_file_actions_addclose(&actions, pipe_fds[0]);
    ASSERT_EQ(::posix_spawn(&pid, helper.c_str(), &actions, nullptr, argv.data(), environ), 0);
    posix_spawn_file_actions_destroy(&actions);
    ::close(pipe_fds[1]);
    char first_report[16];
    ASSERT_GT(::read(pipe_fds[0], first_report, sizeof(first_report)), 0) << "the helper saved nothing";
    // Saving now runs back to back: kill at an arbitrary moment of it.
    std::this_thread::sleep_for(std::chrono::milliseconds(std::uniform_int_distribution<int>(0, 150)(random)));
    ::kill(pid, SIGKILL);
    ::close(pipe_fds[0]);
    int status = 0;
    ::waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFSIGNALED(status));
    State loaded = fabric.load(file);  // throws if the file is not a complete checkpoint
    const auto counter = loaded.get<std::int64_t>("counter");
    EXPECT_GE(counter, last_counter) << "the file never goes back to an older checkpoint";
    EXPECT_EQ(loaded.get<torch::IValue>("model").toGenericDict().size(), 2u);
    last_counter = counter;
  }
  EXPECT_GE(last_counter, 11) << "every helper run completed at least one save";
}

}  // namespace
}  // namespace fabric
