// fabric.log / log_dict reach every logger as scalars on rank zero; fabric.call runs the
// hook on each callback that defines it, in registration order (reference §2, 8.9-8.10).
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <fstream>

#include "fabric/fabric.h"

namespace fabric {
namespace {

// Remembers what it was given, to see exactly what Fabric passes to loggers.
class RecordingLogger : public Logger {
 public:
  std::string name() const override { return "recording"; }
  std::string version() const override { return "0"; }
  std::string root_dir() const override { return ""; }
  std::string log_dir() const override { return ""; }
  void log_metrics(const std::map<std::string, double>& metrics, std::optional<std::int64_t> step) override {
    calls.emplace_back(metrics, step);
  }
  void log_hyperparams(const std::map<std::string, HyperparameterValue>&) override {}
  void finalize(std::string_view status) override { finalized = std::string(status); }

  std::vector<std::pair<std::map<std::string, double>, std::optional<std::int64_t>>> calls;
  std::string finalized;
};

TEST(Log, TensorsAndNumbersReachEveryLoggerAsScalars) {
  auto first = std::make_shared<RecordingLogger>(), second = std::make_shared<RecordingLogger>();
  {
    Fabric fabric({.accelerator = "cpu", .loggers = {first, second}});
    torch::Tensor loss = torch::tensor(0.25, torch::requires_grad());
    fabric.log("loss", loss * 2, 7);
    fabric.log_dict({{"accuracy", 0.5}, {"epoch", 3}});
    EXPECT_EQ(&fabric.logger(), first.get());
    EXPECT_EQ(fabric.loggers().size(), 2u);
  }
  for (const auto& logger : {first, second}) {
    ASSERT_EQ(logger->calls.size(), 2u);
    EXPECT_DOUBLE_EQ(logger->calls[0].first.at("loss"), 0.5);
    EXPECT_EQ(logger->calls[0].second, 7);
    EXPECT_DOUBLE_EQ(logger->calls[1].first.at("epoch"), 3.0);
    EXPECT_FALSE(logger->calls[1].second.has_value());
    EXPECT_EQ(logger->finalized, "success") << "Fabric finalizes its loggers when it goes away";
  }
}

TEST(Log, MultiElementTensorIsRefused) {
  Fabric fabric({.accelerator = "cpu", .loggers = {std::make_shared<RecordingLogger>()}});
  try {
    fabric.log("per_class", torch::ones({3}));
    FAIL();
  } catch (const UsageError& error) {
    EXPECT_NE(std::string(error.what()).find("per_class"), std::string::npos);
  }
  Fabric without({.accelerator = "cpu"});
  EXPECT_THROW(without.logger(), UsageError);
  EXPECT_NO_THROW(without.log("x", 1.0)) << "logging without loggers is a no-op";
}

TEST(Log, CsvLoggerWritesARowPerStep) {
  std::string root = "/tmp/fabric-csv-" + std::to_string(::getpid());
  {
    Fabric fabric({.accelerator = "cpu", .loggers = {loggers::csv({.root_dir = root})}});
    fabric.log("loss", 1.5, 0);
    fabric.log("loss", 0.5, 1);
  }
  std::ifstream file(root + "/lightning_logs/version_0/metrics.csv");
  std::string header, row0, row1;
  std::getline(file, header), std::getline(file, row0), std::getline(file, row1);
  EXPECT_NE(header.find("loss"), std::string::npos);
  EXPECT_NE(header.find("step"), std::string::npos);
  EXPECT_NE(row1.find("0.5"), std::string::npos);
  std::system(("rm -rf " + root).c_str());
}

TEST(Call, RunsHooksInRegistrationOrderAndSkipsCallbacksWithoutThem) {
  std::vector<std::string> order;
  Callback first, second, silent;
  first.on("on_epoch_end", [&](int epoch, double loss) { order.push_back("first " + std::to_string(epoch)); (void)loss; });
  second.on("on_epoch_end", [&](std::int64_t epoch, float) { order.push_back("second " + std::to_string(epoch)); });
  silent.on("on_other", [&] { order.push_back("other"); });
  Fabric fabric({.accelerator = "cpu", .callbacks = {first, silent, second}});
  fabric.call("on_epoch_end", 3, 0.5);
  fabric.call("on_unknown_hook");
  EXPECT_EQ(order, (std::vector<std::string>{"first 3", "second 3"}));
}

TEST(Call, LvalueArgumentsArriveByReference) {
  Callback counter;
  counter.on("on_step", [](int& steps, Fabric& fabric) {
    ++steps;
    EXPECT_EQ(fabric.world_size(), 1);
  });
  Fabric fabric({.accelerator = "cpu", .callbacks = {counter}});
  int steps = 0;
  fabric.call("on_step", steps, fabric);
  fabric.call("on_step", steps, fabric);
  EXPECT_EQ(steps, 2);
}

TEST(Call, MismatchedArgumentsAreAClearError) {
  Callback callback;
  callback.on("on_epoch_end", [](int) {});
  Fabric fabric({.accelerator = "cpu", .callbacks = {callback}});
  EXPECT_THROW(fabric.call("on_epoch_end"), UsageError);
  EXPECT_THROW(fabric.call("on_epoch_end", std::string("three")), UsageError);
}

}  // namespace
}  // namespace fabric
