// Experiment loggers, as in Lightning Fabric: a Logger interface and two file loggers that
// write root_dir/name/version_N/ — CsvLogger (metrics.csv + hparams.yaml) and
// TensorBoardLogger (TensorBoard event files). Fabric calls them on global rank 0 only.
// A logger is not thread-safe: call it from one thread. Plain values only (no torch types):
// this header is shared by torch-free code. Every failure throws a fabric::Error subclass.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include "fabric/errors.h"

namespace fabric {

// A hyperparameter value: a bool, an integer, a float or a string (Lightning logs anything
// else as its str()). Literals pick the natural alternative: true, 32, 0.1, "adam".
using HyperparameterValue = std::variant<bool, std::int64_t, double, std::string>;

// A logger could not write its files: the message names the path and the system's reason.
class LoggerError : public Error {
 public:
  using Error::Error;
};

// Lightning's Logger: where a run's logs go and how metrics and hyperparameters reach them.
class Logger {
 public:
  virtual ~Logger() = default;

  // The experiment name ("" means no name level in the directory tree).
  virtual std::string name() const = 0;
  // The run's version: "N" for version_N (the next free one unless given), or the string
  // version passed in the options.
  virtual std::string version() const = 0;
  virtual std::string root_dir() const = 0;
  // The directory this run writes into: root_dir/name/version_N (or root_dir/name/<version>).
  virtual std::string log_dir() const = 0;

  // Records one value per key at `step`; without a step, the logger numbers its calls
  // 0, 1, 2, ... itself.
  virtual void log_metrics(const std::map<std::string, double>& metrics, std::optional<std::int64_t> step) = 0;
  // Records hyperparameters; later calls add to (and override keys of) earlier ones.
  virtual void log_hyperparams(const std::map<std::string, HyperparameterValue>& params) = 0;
  // Writes everything buffered so far to disk.
  virtual void save() {}
  // The run has ended ("success", "failed", ...): writes what is buffered and closes files.
  virtual void finalize(std::string_view status) { save(); }
};

namespace loggers {

// version=: a number (the directory is version_<N>) or a directory name used verbatim.
using Version = std::variant<std::int64_t, std::string>;

struct CsvLoggerOptions {
  std::string root_dir;                 // "" means the current directory
  std::string name = "lightning_logs";  // "" writes versions directly under root_dir
  std::optional<Version> version;       // unset: one past the highest existing version_N
  std::string prefix;                   // metric keys become "<prefix>-<key>"
  // Rows are buffered and written every this many steps (when (step + 1) % n == 0), and on
  // save() / finalize().
  std::int64_t flush_logs_every_n_steps = 100;
};

// Lightning's CSVLogger. metrics.csv has one row per log_metrics call and one column per
// key ever logged plus "step", sorted by name; a key that first appears late rewrites the
// file with the widened header (earlier rows get empty cells). Hyperparameters go to
// hparams.yaml in log_dir, rewritten on every log_hyperparams call.
class CsvLogger final : public Logger {
 public:
  explicit CsvLogger(CsvLoggerOptions options);
  // Writes buffered rows; a failure here is logged as a warning (destructors do not throw),
  // so call finalize() to see it as an exception.
  ~CsvLogger() override;
  CsvLogger(const CsvLogger&) = delete;
  CsvLogger& operator=(const CsvLogger&) = delete;

  std::string name() const override;
  std::string version() const override;
  std::string root_dir() const override;
  std::string log_dir() const override;
  void log_metrics(const std::map<std::string, double>& metrics, std::optional<std::int64_t> step) override;
  void log_hyperparams(const std::map<std::string, HyperparameterValue>& params) override;
  void save() override;
  void finalize(std::string_view status) override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

struct TensorBoardLoggerOptions {
  std::string root_dir;                 // "~" and $VARS are expanded, as in Lightning
  std::string name = "lightning_logs";  // "" writes versions directly under root_dir
  std::optional<Version> version;       // unset: one past the highest existing version_N
  // log_hyperparams without metrics logs hp_metric = -1, so that TensorBoard's HPARAMS tab
  // has a metric column to show.
  bool default_hp_metric = true;
  std::string prefix;   // metric keys become "<prefix>-<key>"
  std::string sub_dir;  // logs go to root_dir/name/version/sub_dir when set
  // Event files are flushed after this many pending events, or on the first write after
  // flush_secs since the last flush (SummaryWriter's max_queue / flush_secs), and on
  // save() / finalize().
  int max_queue = 10;
  std::chrono::seconds flush_secs{120};
  std::string filename_suffix;  // appended to the event file's name
};

// Lightning's TensorBoardLogger: scalars and hyperparameters (TensorBoard's HParams plugin)
// in an event file "events.out.tfevents.<seconds>.<host>.<pid>.<n>" in log_dir, which
// TensorBoard itself reads. Hyperparameters are also written to log_dir/hparams.yaml.
class TensorBoardLogger final : public Logger {
 public:
  explicit TensorBoardLogger(TensorBoardLoggerOptions options);
  // Flushes and closes the event file; a failure here is logged as a warning.
  ~TensorBoardLogger() override;
  TensorBoardLogger(const TensorBoardLogger&) = delete;
  TensorBoardLogger& operator=(const TensorBoardLogger&) = delete;

  std::string name() const override;
  std::string version() const override;
  std::string root_dir() const override;
  std::string log_dir() const override;
  // One scalar per key (stored as a 32-bit float, as TensorBoard's simple_value is).
  void log_metrics(const std::map<std::string, double>& metrics, std::optional<std::int64_t> step) override;
  void log_hyperparams(const std::map<std::string, HyperparameterValue>& params) override;
  // Hyperparameters with the metrics the HParams tab compares runs by; each metric is also
  // logged as a scalar at step 0. Empty metrics behave as log_hyperparams(params).
  void log_hyperparams(const std::map<std::string, HyperparameterValue>& params,
                       const std::map<std::string, double>& metrics);
  // Flushes the event file.
  void save() override;
  // Flushes and closes the event file; logging afterwards starts a new event file.
  void finalize(std::string_view status) override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

std::shared_ptr<CsvLogger> csv(CsvLoggerOptions options);
std::shared_ptr<TensorBoardLogger> tensorboard(TensorBoardLoggerOptions options);

}  // namespace loggers
}  // namespace fabric
