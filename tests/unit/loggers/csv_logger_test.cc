// CsvLogger against Lightning's CSVLogger: version directories, metrics.csv's layout (sorted
// header with a step column, one row per call, Python's float spelling and CRLF line ends),
// widening the header when keys appear late, flushing every n steps, hparams.yaml.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <limits>
#include <sstream>

#include "fabric/loggers.h"
#include "loggers/metrics_csv.h"
#include "loggers/text_format.h"
#include "support/temp_dir.h"

namespace fabric::loggers {
namespace {

using testing::read_file;
using testing::ScopedTempDir;
using testing::write_file;

bool exists(const std::string& path) {
  struct stat info {};
  return ::stat(path.c_str(), &info) == 0;
}

void make_dir(const std::string& path) { ASSERT_EQ(::mkdir(path.c_str(), 0777), 0) << path; }

TEST(CsvLogger, NextVersionIsOnePastTheHighestExistingVersionDirectory) {
  ScopedTempDir root;
  auto first = csv({.root_dir = root.path(), .name = "exp"});
  EXPECT_EQ(first->version(), "0");  // no root_dir/exp yet
  make_dir(root / "exp");
  make_dir(root / "exp/version_0");
  make_dir(root / "exp/version_3");
  make_dir(root / "exp/version_x");        // not a number: ignored
  write_file(root / "exp/version_9", "");  // not a directory: ignored
  auto logger = csv({.root_dir = root.path(), .name = "exp"});
  EXPECT_EQ(logger->version(), "4");
  EXPECT_EQ(logger->log_dir(), root / "exp/version_4");
  EXPECT_EQ(logger->name(), "exp");
  EXPECT_EQ(logger->root_dir(), root.path());
}

TEST(CsvLogger, ExplicitVersionsAndAnEmptyNameShapeTheLogDir) {
  ScopedTempDir root;
  EXPECT_EQ(csv({.root_dir = root.path(), .version = 7})->log_dir(), root / "lightning_logs/version_7");
  EXPECT_EQ(csv({.root_dir = root.path(), .name = "exp", .version = "baseline"})->log_dir(), root / "exp/baseline");
  EXPECT_EQ(csv({.root_dir = root.path(), .name = "", .version = 1})->log_dir(), root / "version_1");
}

TEST(CsvLogger, InvalidOptionsAreRejectedWithTheValue) {
  EXPECT_THROW(csv({.root_dir = "logs", .version = -1}), ConfigurationError);
  EXPECT_THROW(csv({.root_dir = "logs", .version = ""}), ConfigurationError);
  try {
    csv({.root_dir = "logs", .flush_logs_every_n_steps = 0});
    FAIL() << "expected ConfigurationError";
  } catch (const ConfigurationError& error) {
    EXPECT_NE(std::string(error.what()).find("flush_logs_every_n_steps=0"), std::string::npos) << error.what();
  }
}

TEST(CsvLogger, NothingTouchesTheFileSystemUntilSomethingIsLogged) {
  ScopedTempDir root;
  auto logger = csv({.root_dir = root / "logs"});
  EXPECT_EQ(logger->log_dir(), root / "logs/lightning_logs/version_0");
  logger->save();
  logger->finalize("success");
  EXPECT_FALSE(exists(root / "logs"));
}

TEST(CsvLogger, WritesOneRowPerStepUnderASortedHeaderWithAStepColumn) {
  ScopedTempDir root;
  auto logger = csv({.root_dir = root.path()});
  logger->log_metrics({{"train_loss", 0.5}, {"acc", 1.0}}, 0);
  logger->log_metrics({{"train_loss", 0.25}, {"acc", 0.1}}, 10);
  logger->finalize("success");
  EXPECT_EQ(read_file(logger->log_dir() + "/metrics.csv"),
            "acc,step,train_loss\r\n"
            "1.0,0,0.5\r\n"
            "0.1,10,0.25\r\n");
}

TEST(CsvLogger, WithoutAStepNumbersRowsInOrder) {
  ScopedTempDir root;
  auto logger = csv({.root_dir = root.path(), .flush_logs_every_n_steps = 2});
  for (int i = 0; i < 5; ++i) logger->log_metrics({{"x", static_cast<double>(i)}}, std::nullopt);
  logger->finalize("success");
  // Lightning numbers rows by its buffer, which every flush empties (0, 1, 0, 1, 0); this
  // logger keeps counting.
  EXPECT_EQ(read_file(logger->log_dir() + "/metrics.csv"), "step,x\r\n0,0.0\r\n1,1.0\r\n2,2.0\r\n3,3.0\r\n4,4.0\r\n");
}

TEST(CsvLogger, FlushesWhenStepPlusOneIsAMultipleOfN) {
  ScopedTempDir root;
  auto logger = csv({.root_dir = root.path(), .flush_logs_every_n_steps = 3});
  const std::string metrics = logger->log_dir() + "/metrics.csv";
  logger->log_metrics({{"loss", 1.0}}, 0);
  logger->log_metrics({{"loss", 1.0}}, 1);
  EXPECT_FALSE(exists(metrics));
  logger->log_metrics({{"loss", 1.0}}, 2);
  EXPECT_EQ(read_file(metrics), "loss,step\r\n1.0,0\r\n1.0,1\r\n1.0,2\r\n");
  logger->log_metrics({{"loss", 2.0}}, 3);
  logger->save();
  EXPECT_EQ(read_file(metrics), "loss,step\r\n1.0,0\r\n1.0,1\r\n1.0,2\r\n2.0,3\r\n");
}

TEST(CsvLogger, AKeyAppearingLaterRewritesTheFileWithTheWidenedHeader) {
  ScopedTempDir root;
  auto logger = csv({.root_dir = root.path()});
  const std::string metrics = logger->log_dir() + "/metrics.csv";
  logger->log_metrics({{"b", 1.0}}, 0);
  logger->save();
  logger->log_metrics({{"b", 2.0}}, 1);
  logger->save();  // same keys: appended
  EXPECT_EQ(read_file(metrics), "b,step\r\n1.0,0\r\n2.0,1\r\n");
  logger->log_metrics({{"a", 3.0}, {"c", 4.0}}, 2);
  logger->save();
  EXPECT_EQ(read_file(metrics),
            "a,b,c,step\r\n"
            ",1.0,,0\r\n"
            ",2.0,,1\r\n"
            "3.0,,4.0,2\r\n");
  EXPECT_FALSE(exists(metrics + ".tmp"));
}

TEST(CsvLogger, RowsWithDifferentKeysInOneFlushShareTheUnionHeader) {
  ScopedTempDir root;
  auto logger = csv({.root_dir = root.path()});
  logger->log_metrics({{"train/loss", 0.5}}, 0);
  logger->log_metrics({{"val/loss", 0.75}}, 0);
  logger->finalize("success");
  EXPECT_EQ(read_file(logger->log_dir() + "/metrics.csv"), "step,train/loss,val/loss\r\n0,0.5,\r\n0,,0.75\r\n");
}

TEST(CsvLogger, PrefixJoinsKeysWithADash) {
  ScopedTempDir root;
  auto logger = csv({.root_dir = root.path(), .prefix = "train"});
  logger->log_metrics({{"loss", 0.5}}, 0);
  logger->finalize("success");
  EXPECT_EQ(read_file(logger->log_dir() + "/metrics.csv"), "step,train-loss\r\n0,0.5\r\n");
}

TEST(CsvLogger, AMetricNamedStepIsRejectedInsteadOfOverwritten) {
  ScopedTempDir root;
  auto logger = csv({.root_dir = root.path()});
  EXPECT_THROW(logger->log_metrics({{"step", 3.0}}, 0), UsageError);
}

TEST(CsvLogger, KeysThatNeedQuotingAreQuotedAndSurviveARewrite) {
  ScopedTempDir root;
  auto logger = csv({.root_dir = root.path()});
  const std::string metrics = logger->log_dir() + "/metrics.csv";
  logger->log_metrics({{"a,b", 1.0}, {"say \"hi\"", 2.0}}, 0);
  logger->save();
  logger->log_metrics({{"z", 3.0}}, 1);
  logger->save();
  EXPECT_EQ(read_file(metrics),
            "\"a,b\",\"say \"\"hi\"\"\",step,z\r\n"
            "1.0,2.0,0,\r\n"
            ",,1,3.0\r\n");
}

TEST(CsvLogger, AnExistingLogDirLosesItsOldMetricsFileButKeepsOtherFiles) {
  ScopedTempDir root;
  make_dir(root / "lightning_logs");
  make_dir(root / "lightning_logs/run");
  write_file(root / "lightning_logs/run/metrics.csv", "old,step\r\n9.0,0\r\n");
  write_file(root / "lightning_logs/run/notes.txt", "keep me");
  auto logger = csv({.root_dir = root.path(), .version = "run"});
  logger->log_metrics({{"loss", 1.5}}, 0);
  EXPECT_FALSE(exists(root / "lightning_logs/run/metrics.csv"));
  logger->finalize("success");
  EXPECT_EQ(read_file(root / "lightning_logs/run/metrics.csv"), "loss,step\r\n1.5,0\r\n");
  EXPECT_EQ(read_file(root / "lightning_logs/run/notes.txt"), "keep me");
}

TEST(CsvLogger, DestructionWritesBufferedRows) {
  ScopedTempDir root;
  std::string log_dir;
  {
    auto logger = csv({.root_dir = root.path()});
    logger->log_metrics({{"loss", 0.5}}, 0);
    log_dir = logger->log_dir();
  }
  EXPECT_EQ(read_file(log_dir + "/metrics.csv"), "loss,step\r\n0.5,0\r\n");
}

TEST(CsvLogger, HyperparametersGoToHparamsYaml) {
  ScopedTempDir root;
  auto logger = csv({.root_dir = root.path()});
  logger->log_hyperparams({{"lr", 0.001}, {"batch_size", 32}, {"optimizer", "adam"}, {"amsgrad", true}});
  logger->log_hyperparams({{"lr", 1e-05}, {"note", "yes"}, {"path", "a: b"}});
  EXPECT_EQ(read_file(logger->log_dir() + "/hparams.yaml"),
            "amsgrad: true\n"
            "batch_size: 32\n"
            "lr: 1.0e-05\n"
            "note: 'yes'\n"
            "optimizer: adam\n"
            "path: 'a: b'\n");
}

TEST(CsvLogger, AnUnwritableRootDirThrowsNamingThePath) {
  ScopedTempDir root;
  write_file(root / "a_file", "");
  auto logger = csv({.root_dir = root / "a_file/logs"});
  try {
    logger->log_metrics({{"loss", 1.0}}, 0);
    FAIL() << "expected LoggerError";
  } catch (const LoggerError& error) {
    EXPECT_NE(std::string(error.what()).find(root / "a_file/logs"), std::string::npos) << error.what();
  }
}

TEST(PythonFloatRepr, SpellsFloatsAsPythonsReprDoes) {
  EXPECT_EQ(python_float_repr(1.0), "1.0");
  EXPECT_EQ(python_float_repr(0.1), "0.1");
  EXPECT_EQ(python_float_repr(-2.5), "-2.5");
  EXPECT_EQ(python_float_repr(0.0), "0.0");
  EXPECT_EQ(python_float_repr(100000.0), "100000.0");
  EXPECT_EQ(python_float_repr(1e15), "1000000000000000.0");
  EXPECT_EQ(python_float_repr(1e16), "1e+16");
  EXPECT_EQ(python_float_repr(0.0001), "0.0001");
  EXPECT_EQ(python_float_repr(1e-05), "1e-05");
  EXPECT_EQ(python_float_repr(1.5e-07), "1.5e-07");
  EXPECT_EQ(python_float_repr(1.0 / 3.0), "0.3333333333333333");
  EXPECT_EQ(python_float_repr(123456789.123), "123456789.123");
  EXPECT_EQ(python_float_repr(std::numeric_limits<double>::quiet_NaN()), "nan");
  EXPECT_EQ(python_float_repr(-std::numeric_limits<double>::infinity()), "-inf");
}

TEST(CsvDialect, ReadsBackWhatItWrites) {
  std::istringstream in("\"a,b\",\"x\r\ny\",plain\r\n,,\nlast");
  std::vector<std::string> fields;
  ASSERT_TRUE(read_csv_record(in, fields));
  EXPECT_EQ(fields, (std::vector<std::string>{"a,b", "x\r\ny", "plain"}));
  ASSERT_TRUE(read_csv_record(in, fields));
  EXPECT_EQ(fields, (std::vector<std::string>{"", "", ""}));
  ASSERT_TRUE(read_csv_record(in, fields));
  EXPECT_EQ(fields, (std::vector<std::string>{"last"}));
  EXPECT_FALSE(read_csv_record(in, fields));
  EXPECT_EQ(csv_field("x\ny"), "\"x\ny\"");
  EXPECT_EQ(csv_field("plain"), "plain");
}

}  // namespace
}  // namespace fabric::loggers
