// Lightning's CSVLogger (lightning/fabric/loggers/csv_logs.py), with hparams.yaml as
// Lightning's Trainer-side CSVLogger writes it.
#include <optional>

#include "fabric/loggers.h"
#include "log/log.h"
#include "loggers/files.h"
#include "loggers/metrics_csv.h"
#include "loggers/run_directory.h"
#include "loggers/text_format.h"

namespace fabric::loggers {
namespace {

constexpr std::string_view kMetricsFile = "metrics.csv";
constexpr std::string_view kHParamsFile = "hparams.yaml";
// Lightning's LOGGER_JOIN_CHAR: prefix "train" turns "loss" into "train-loss".
constexpr std::string_view kPrefixSeparator = "-";

}  // namespace

struct CsvLogger::Impl {
  CsvLoggerOptions options;
  RunDirectory directory;
  std::optional<MetricsCsv> metrics;  // created with the log directory, on first use
  std::map<std::string, HyperparameterValue> hparams;
  std::int64_t rows_logged = 0;

  explicit Impl(CsvLoggerOptions opts)
      : options(std::move(opts)), directory(options.root_dir, options.name, options.version, "", false) {
    if (options.flush_logs_every_n_steps < 1) {
      throw ConfigurationError(
          "CsvLogger flush_logs_every_n_steps=" + std::to_string(options.flush_logs_every_n_steps) +
          " must be >= 1 (rows are written every that many steps; the default is 100).");
    }
  }

  // Lightning's `experiment`: makes the log directory; a directory that already holds files
  // gets a warning, and its metrics.csv is replaced by this run's.
  MetricsCsv& experiment() {
    if (metrics) return *metrics;
    const std::string log_dir = directory.log_dir();
    const std::string metrics_path = files::join(log_dir, kMetricsFile);
    if (!files::list_directory(log_dir).empty()) {
      log::warn("Experiment logs directory " + log_dir +
                " exists and is not empty. Previous log files in this directory will be deleted when the new ones "
                "are saved!");
      if (files::is_regular_file(metrics_path)) files::remove_file(metrics_path);
    }
    files::make_directories(log_dir);
    metrics.emplace(metrics_path);
    return *metrics;
  }
};

CsvLogger::CsvLogger(CsvLoggerOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}

CsvLogger::~CsvLogger() {
  if (!impl_->metrics || impl_->metrics->buffered_rows() == 0) return;
  try {
    impl_->metrics->save();
  } catch (const std::exception& error) {
    log::warn("CsvLogger lost " + std::to_string(impl_->metrics->buffered_rows()) +
              " rows of metrics it could not write when destroyed: " + error.what());
  }
}

std::string CsvLogger::name() const { return impl_->directory.name(); }
std::string CsvLogger::version() const { return impl_->directory.version(); }
std::string CsvLogger::root_dir() const { return impl_->directory.root_dir(); }
std::string CsvLogger::log_dir() const { return impl_->directory.log_dir(); }

void CsvLogger::log_metrics(const std::map<std::string, double>& metrics, std::optional<std::int64_t> step) {
  std::map<std::string, double> row;
  for (const auto& [key, value] : metrics) {
    std::string column =
        impl_->options.prefix.empty() ? key : impl_->options.prefix + std::string(kPrefixSeparator) + key;
    if (column == MetricsCsv::kStepColumn) {
      throw UsageError(
          "CsvLogger cannot log a metric named \"step\": metrics.csv's step column holds the step. Rename the "
          "metric, or pass its value as log_metrics' step argument.");
    }
    row.emplace(std::move(column), value);
  }
  const std::int64_t row_step = step.value_or(impl_->rows_logged);
  impl_->experiment().add_row(row_step, std::move(row));
  ++impl_->rows_logged;
  if ((row_step + 1) % impl_->options.flush_logs_every_n_steps == 0) save();
}

void CsvLogger::log_hyperparams(const std::map<std::string, HyperparameterValue>& params) {
  impl_->experiment();
  for (const auto& [key, value] : params) impl_->hparams.insert_or_assign(key, value);
  files::replace_file(files::join(log_dir(), kHParamsFile), hparams_yaml(impl_->hparams));
}

void CsvLogger::save() {
  if (impl_->metrics) impl_->metrics->save();
}

void CsvLogger::finalize(std::string_view /*status*/) { save(); }

std::shared_ptr<CsvLogger> csv(CsvLoggerOptions options) { return std::make_shared<CsvLogger>(std::move(options)); }

}  // namespace fabric::loggers
