// Lightning's TensorBoardLogger (lightning/fabric/loggers/tensorboard.py), writing the event
// files itself instead of through torch.utils.tensorboard.SummaryWriter.
#include <memory>
#include <vector>

#include "fabric/loggers.h"
#include "loggers/event_file_writer.h"
#include "loggers/files.h"
#include "loggers/run_directory.h"
#include "loggers/tensorboard_events.h"
#include "loggers/text_format.h"

namespace fabric::loggers {
namespace {

constexpr std::string_view kHParamsFile = "hparams.yaml";
constexpr std::string_view kPrefixSeparator = "-";
constexpr std::string_view kDefaultHpMetric = "hp_metric";

}  // namespace

struct TensorBoardLogger::Impl {
  TensorBoardLoggerOptions options;
  RunDirectory directory;
  std::unique_ptr<EventFileWriter> writer;  // opened on first use, closed by finalize()
  std::map<std::string, HyperparameterValue> hparams;
  std::int64_t calls_logged = 0;

  explicit Impl(TensorBoardLoggerOptions opts)
      : options(std::move(opts)), directory(options.root_dir, options.name, options.version, options.sub_dir, true) {
    if (options.max_queue < 1) {
      throw ConfigurationError("TensorBoardLogger max_queue=" + std::to_string(options.max_queue) +
                               " must be >= 1 (events are flushed once that many are pending; the default is 10).");
    }
    if (options.flush_secs.count() < 0) {
      throw ConfigurationError("TensorBoardLogger flush_secs=" + std::to_string(options.flush_secs.count()) +
                               "s must be >= 0 (the default is 120s).");
    }
  }

  // Lightning's `experiment`: the SummaryWriter, here the event file.
  EventFileWriter& experiment() {
    if (!writer) {
      const std::string log_dir = directory.log_dir();
      files::make_directories(log_dir);
      writer = std::make_unique<EventFileWriter>(log_dir, EventFileOptions{.max_queue = options.max_queue,
                                                                           .flush_secs = options.flush_secs,
                                                                           .filename_suffix = options.filename_suffix});
    }
    return *writer;
  }

  std::string tag(const std::string& key) const {
    return options.prefix.empty() ? key : options.prefix + std::string(kPrefixSeparator) + key;
  }

  void write_scalars(const std::map<std::string, double>& metrics, std::int64_t step) {
    EventFileWriter& file = experiment();
    const double wall_time = wall_time_now();
    for (const auto& [key, value] : metrics) {
      file.add_event(events::scalar(wall_time, step, tag(key), static_cast<float>(value)));
    }
  }
};

TensorBoardLogger::TensorBoardLogger(TensorBoardLoggerOptions options)
    : impl_(std::make_unique<Impl>(std::move(options))) {}

// The writer's destructor flushes and closes the file, warning if it cannot.
TensorBoardLogger::~TensorBoardLogger() = default;

std::string TensorBoardLogger::name() const { return impl_->directory.name(); }
std::string TensorBoardLogger::version() const { return impl_->directory.version(); }
std::string TensorBoardLogger::root_dir() const { return impl_->directory.root_dir(); }
std::string TensorBoardLogger::log_dir() const { return impl_->directory.log_dir(); }

void TensorBoardLogger::log_metrics(const std::map<std::string, double>& metrics, std::optional<std::int64_t> step) {
  impl_->write_scalars(metrics, step.value_or(impl_->calls_logged));
  ++impl_->calls_logged;
}

void TensorBoardLogger::log_hyperparams(const std::map<std::string, HyperparameterValue>& params) {
  log_hyperparams(params, {});
}

void TensorBoardLogger::log_hyperparams(const std::map<std::string, HyperparameterValue>& params,
                                        const std::map<std::string, double>& metrics) {
  for (const auto& [key, value] : params) impl_->hparams.insert_or_assign(key, value);
  const std::string log_dir = impl_->directory.log_dir();
  files::make_directories(log_dir);
  files::replace_file(files::join(log_dir, kHParamsFile), hparams_yaml(impl_->hparams));

  std::map<std::string, double> hp_metrics = metrics;
  if (hp_metrics.empty() && impl_->options.default_hp_metric) hp_metrics.emplace(kDefaultHpMetric, -1.0);
  // Without a metric, TensorBoard's HParams tab has nothing to show: Lightning writes no
  // hparams events then.
  if (hp_metrics.empty()) return;
  impl_->write_scalars(hp_metrics, 0);
  std::vector<std::string> metric_tags;
  metric_tags.reserve(hp_metrics.size());
  for (const auto& [key, value] : hp_metrics) metric_tags.push_back(impl_->tag(key));
  EventFileWriter& file = impl_->experiment();
  for (const std::string& event : events::hparams(wall_time_now(), impl_->hparams, metric_tags)) file.add_event(event);
  file.flush();
}

void TensorBoardLogger::save() {
  if (impl_->writer) impl_->writer->flush();
}

void TensorBoardLogger::finalize(std::string_view /*status*/) {
  if (!impl_->writer) return;
  std::unique_ptr<EventFileWriter> writer = std::move(impl_->writer);
  writer->close();
}

std::shared_ptr<TensorBoardLogger> tensorboard(TensorBoardLoggerOptions options) {
  return std::make_shared<TensorBoardLogger>(std::move(options));
}

}  // namespace fabric::loggers
