// TensorBoardLogger: the event files it writes are read back by TensorBoard's own Python
// reader (read_tensorboard.py, run with FABRIC_PYTHON), which must find every scalar at its
// step and the hyperparameters in the HParams plugin's format.
#include <dirent.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "fabric/loggers.h"
#include "support/temp_dir.h"

namespace fabric::loggers {
namespace {

using testing::read_file;
using testing::ScopedTempDir;

std::vector<std::string> event_files(const std::string& dir) {
  std::vector<std::string> names;
  std::unique_ptr<DIR, int (*)(DIR*)> handle(::opendir(dir.c_str()), &::closedir);
  if (!handle) return names;
  while (const dirent* entry = ::readdir(handle.get())) {
    const std::string name = entry->d_name;
    if (name.starts_with("events.out.tfevents.")) names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  return names;
}

// What TensorBoard read from log_dir: read_tensorboard.py's output lines, as a set.
std::set<std::string> read_with_tensorboard(const std::string& log_dir) {
  const std::string command =
      std::string(FABRIC_PYTHON) + " '" + FABRIC_LOGGERS_TEST_DIR + "/read_tensorboard.py' '" + log_dir + "'";
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> pipe(::popen(command.c_str(), "r"), &::pclose);
  if (!pipe) {
    ADD_FAILURE() << "cannot run " << command;
    return {};
  }
  std::string output;
  char buffer[4096];
  while (const std::size_t n = std::fread(buffer, 1, sizeof buffer, pipe.get())) output.append(buffer, n);
  const int status = ::pclose(pipe.release());
  EXPECT_EQ(status, 0) << command << " failed (exit status " << status << "); output:\n" << output;
  std::set<std::string> lines;
  std::istringstream in(output);
  for (std::string line; std::getline(in, line);) lines.insert(line);
  return lines;
}

TEST(TensorBoardLogger, TensorBoardReadsScalarsAndHyperparameters) {
  ScopedTempDir root;
  auto logger = tensorboard({.root_dir = root.path(), .name = "exp"});
  logger->log_hyperparams({{"lr", 0.01}, {"batch_size", 32}, {"optimizer", "adam"}, {"amsgrad", true}});
  for (std::int64_t step = 0; step < 5; ++step) {
    logger->log_metrics({{"loss", 1.0 / static_cast<double>(step + 1)}, {"acc", 0.25 * static_cast<double>(step)}},
                        step * 10);
  }
  logger->finalize("success");

  ASSERT_EQ(logger->log_dir(), root / "exp/version_0");
  const std::vector<std::string> files = event_files(logger->log_dir());
  ASSERT_EQ(files.size(), 1u);
  EXPECT_TRUE(std::regex_match(files[0], std::regex(R"(events\.out\.tfevents\.\d{10}\.[^.].*\.\d+\.\d+)"))) << files[0];

  const std::set<std::string> read = read_with_tensorboard(logger->log_dir());
  // file_version + hp_metric + 3 hparams events + 5 steps x 2 scalars
  EXPECT_TRUE(read.contains("file " + files[0] + " records 15")) << ::testing::PrintToString(read);
  EXPECT_TRUE(read.contains("file_version brain.Event:2"));
  const std::vector<std::string> expected = {
      "scalar loss 0 1.0",
      "scalar loss 10 0.5",
      "scalar loss 20 0.3333333432674408",  // stored as a 32-bit float, like SummaryWriter's
      "scalar loss 30 0.25",
      "scalar loss 40 0.20000000298023224",
      "scalar acc 0 0.0",
      "scalar acc 10 0.25",
      "scalar acc 40 1.0",
      "scalar hp_metric 0 -1.0",
      "hparam_info lr DATA_TYPE_FLOAT64",
      "hparam_info batch_size DATA_TYPE_FLOAT64",
      "hparam_info optimizer DATA_TYPE_STRING",
      "hparam_info amsgrad DATA_TYPE_BOOL",
      "metric_info hp_metric",
      "hparam lr number_value 0.01",
      "hparam batch_size number_value 32.0",
      "hparam optimizer string_value 'adam'",
      "hparam amsgrad bool_value True",
      "session_end STATUS_SUCCESS",
  };
  for (const std::string& line : expected) EXPECT_TRUE(read.contains(line)) << "missing: " << line;
}

TEST(TensorBoardLogger, HyperparameterMetricsArePassedToTheHParamsPluginAndLoggedAtStepZero) {
  ScopedTempDir root;
  auto logger = tensorboard({.root_dir = root.path(), .prefix = "val"});
  logger->log_hyperparams({{"dropout", 0.5}}, {{"accuracy", 0.75}});
  logger->finalize("success");
  const std::set<std::string> read = read_with_tensorboard(logger->log_dir());
  EXPECT_TRUE(read.contains("scalar val-accuracy 0 0.75"));
  EXPECT_TRUE(read.contains("metric_info val-accuracy"));
  EXPECT_FALSE(read.contains("scalar val-hp_metric 0 -1.0"));
  EXPECT_EQ(read_file(logger->log_dir() + "/hparams.yaml"), "dropout: 0.5\n");
}

TEST(TensorBoardLogger, WithoutDefaultHpMetricHyperparametersAloneWriteOnlyHparamsYaml) {
  ScopedTempDir root;
  auto logger = tensorboard({.root_dir = root.path(), .default_hp_metric = false});
  logger->log_hyperparams({{"seed", 42}});
  EXPECT_TRUE(event_files(logger->log_dir()).empty());
  EXPECT_EQ(read_file(logger->log_dir() + "/hparams.yaml"), "seed: 42\n");
}

TEST(TensorBoardLogger, StepsDefaultToTheCallCount) {
  ScopedTempDir root;
  auto logger = tensorboard({.root_dir = root.path()});
  logger->log_metrics({{"loss", 3.0}}, std::nullopt);
  logger->log_metrics({{"loss", 2.0}}, std::nullopt);
  logger->log_metrics({{"loss", 1.0}}, 7);
  logger->log_metrics({{"loss", 0.5}}, std::nullopt);
  logger->save();  // flushed, readable before finalize
  const std::set<std::string> read = read_with_tensorboard(logger->log_dir());
  for (const char* line : {"scalar loss 0 3.0", "scalar loss 1 2.0", "scalar loss 7 1.0", "scalar loss 3 0.5"}) {
    EXPECT_TRUE(read.contains(line)) << "missing: " << line;
  }
}

TEST(TensorBoardLogger, LogDirTakesSubDirAndExpandsEnvironmentVariables) {
  ScopedTempDir root;
  ASSERT_EQ(::setenv("FABRIC_TB_TEST_ROOT", root.path().c_str(), 1), 0);
  ::unsetenv("USER_SUB");
  auto logger = tensorboard({.root_dir = "$FABRIC_TB_TEST_ROOT/logs", .version = 2, .sub_dir = "${USER_SUB}x"});
  EXPECT_EQ(logger->root_dir(), "$FABRIC_TB_TEST_ROOT/logs");
  EXPECT_EQ(logger->log_dir(), root / "logs/lightning_logs/version_2/${USER_SUB}x");
  ::unsetenv("FABRIC_TB_TEST_ROOT");
}

TEST(TensorBoardLogger, NextVersionLooksUnderTheExpandedRoot) {
  ScopedTempDir root;
  tensorboard({.root_dir = root.path(), .name = "exp"})->log_metrics({{"x", 1.0}}, 0);
  ASSERT_EQ(::setenv("FABRIC_TB_TEST_ROOT", root.path().c_str(), 1), 0);
  EXPECT_EQ(tensorboard({.root_dir = "${FABRIC_TB_TEST_ROOT}", .name = "exp"})->version(), "1");
  ::unsetenv("FABRIC_TB_TEST_ROOT");
}

TEST(TensorBoardLogger, LoggingAfterFinalizeStartsANewEventFile) {
  ScopedTempDir root;
  auto logger = tensorboard({.root_dir = root.path()});
  logger->log_metrics({{"loss", 1.0}}, 0);
  logger->finalize("success");
  logger->log_metrics({{"loss", 0.5}}, 1);
  logger->finalize("success");
  EXPECT_EQ(event_files(logger->log_dir()).size(), 2u);
  const std::set<std::string> read = read_with_tensorboard(logger->log_dir());
  EXPECT_TRUE(read.contains("scalar loss 0 1.0"));
  EXPECT_TRUE(read.contains("scalar loss 1 0.5"));
}

TEST(TensorBoardLogger, InvalidOptionsAreRejected) {
  EXPECT_THROW(tensorboard({.root_dir = "logs", .version = -3}), ConfigurationError);
  EXPECT_THROW(tensorboard({.root_dir = "logs", .max_queue = 0}), ConfigurationError);
}

TEST(TensorBoardLogger, AnUnwritableRootDirThrowsNamingThePath) {
  ScopedTempDir root;
  testing::write_file(root / "a_file", "");
  auto logger = tensorboard({.root_dir = root / "a_file"});
  try {
    logger->log_metrics({{"loss", 1.0}}, 0);
    FAIL() << "expected LoggerError";
  } catch (const LoggerError& error) {
    EXPECT_NE(std::string(error.what()).find(root / "a_file"), std::string::npos) << error.what();
  }
}

}  // namespace
}  // namespace fabric::loggers
