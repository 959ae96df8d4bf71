#include "observability/metrics.h"

#include <charconv>
#include <cmath>
#include <limits>
#include <stdexcept>

namespace fabric::launcher {
namespace {

// A sample value or a bucket bound: integers as integers, others in their shortest exact form.
std::string format_value(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  char buffer[32];
  const auto result = std::to_chars(buffer, buffer + sizeof(buffer), value);
  return std::string(buffer, result.ptr);
}

std::string escape(const std::string& text, bool quotes) {
  std::string escaped;
  escaped.reserve(text.size());
  for (const char c : text) {
    if (c == '\\') {
      escaped += "\\\\";
    } else if (c == '\n') {
      escaped += "\\n";
    } else if (c == '"' && quotes) {
      escaped += "\\\"";
    } else {
      escaped += c;
    }
  }
  return escaped;
}

// {a="1",b="2"}, with `extra` (le="...") last; "" when there are no labels at all.
std::string label_set(const std::vector<std::string>& names, const LabelValues& values,
                      const std::string& extra = "") {
  std::string text;
  for (std::size_t i = 0; i < names.size(); ++i) {
    text += (text.empty() ? "" : ",") + names[i] + "=\"" + escape(values[i], true) + "\"";
  }
  if (!extra.empty()) text += (text.empty() ? "" : ",") + extra;
  return text.empty() ? "" : "{" + text + "}";
}

void check_arity(const std::vector<std::string>& names, const LabelValues& values, const std::string& family) {
  if (names.size() != values.size()) {
    throw std::logic_error("metric " + family + " has " + std::to_string(names.size()) + " labels, given " +
                           std::to_string(values.size()) + " values");
  }
}

}  // namespace

const std::vector<double>& default_latency_buckets() {
  static const std::vector<double> buckets = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                              0.1,    0.25,  0.5,    1,     2.5,  5,     10};
  return buckets;
}

void CounterFamily::add(const LabelValues& labels, double amount) {
  if (!(amount >= 0)) throw std::logic_error("a counter only goes up");
  std::lock_guard lock(mutex_);
  values_[labels] += amount;
}

double CounterFamily::value(const LabelValues& labels) const {
  std::lock_guard lock(mutex_);
  const auto it = values_.find(labels);
  return it == values_.end() ? 0 : it->second;
}

void GaugeFamily::set(const LabelValues& labels, double value) {
  std::lock_guard lock(mutex_);
  values_[labels] = value;
}

void GaugeFamily::add(const LabelValues& labels, double amount) {
  std::lock_guard lock(mutex_);
  values_[labels] += amount;
}

void GaugeFamily::clear() {
  std::lock_guard lock(mutex_);
  values_.clear();
}

HistogramFamily::HistogramFamily(std::vector<double> bounds) : bounds_(std::move(bounds)) {
  for (std::size_t i = 1; i < bounds_.size(); ++i) {
    if (!(bounds_[i - 1] < bounds_[i])) throw std::logic_error("histogram bounds must ascend");
  }
}

void HistogramFamily::observe(const LabelValues& labels, double value) {
  std::size_t bucket = 0;
  while (bucket < bounds_.size() && value > bounds_[bucket]) ++bucket;
  std::lock_guard lock(mutex_);
  Series& series = series_[labels];
  if (series.counts.empty()) series.counts.assign(bounds_.size() + 1, 0);
  ++series.counts[bucket];
  series.sum += value;
  ++series.count;
}

MetricsRegistry::Family& MetricsRegistry::family(const std::string& name, const std::string& type,
                                                 const std::string& help, std::vector<std::string> labels) {
  std::lock_guard lock(mutex_);
  auto [it, made] = families_.try_emplace(name);
  Family& family = it->second;
  if (made) {
    family.type = type;
    family.help = help;
    family.labels = std::move(labels);
  } else if (family.type != type || family.labels != labels) {
    throw std::logic_error("metric " + name + " was registered as another " + family.type);
  }
  return family;
}

CounterFamily& MetricsRegistry::counter(const std::string& name, const std::string& help,
                                        std::vector<std::string> labels) {
  Family& f = family(name, "counter", help, std::move(labels));
  std::lock_guard lock(mutex_);
  if (!f.counter) f.counter = std::make_unique<CounterFamily>();
  return *f.counter;
}

GaugeFamily& MetricsRegistry::gauge(const std::string& name, const std::string& help,
                                    std::vector<std::string> labels) {
  Family& f = family(name, "gauge", help, std::move(labels));
  std::lock_guard lock(mutex_);
  if (!f.gauge) f.gauge = std::make_unique<GaugeFamily>();
  return *f.gauge;
}

HistogramFamily& MetricsRegistry::histogram(const std::string& name, const std::string& help,
                                            std::vector<std::string> labels, std::vector<double> bounds) {
  Family& f = family(name, "histogram", help, std::move(labels));
  std::lock_guard lock(mutex_);
  if (!f.histogram) f.histogram = std::make_unique<HistogramFamily>(std::move(bounds));
  return *f.histogram;
}

GaugeFamily& MetricsRegistry::Scrape::gauge(const std::string& name, const std::string& help,
                                            std::vector<std::string> labels) {
  GaugeFamily& gauge = registry_.gauge(name, help, std::move(labels));
  std::lock_guard lock(registry_.mutex_);
  registry_.families_.at(name).rebuilt_at_scrape = true;  // cleared before every scrape from now on
  return gauge;
}

int MetricsRegistry::add_collector(std::function<void(Scrape&)> collector) {
  std::lock_guard lock(mutex_);
  collectors_.emplace(next_collector_, std::move(collector));
  return next_collector_++;
}

void MetricsRegistry::remove_collector(int id) {
  std::lock_guard render(render_mutex_);  // not while it runs
  std::lock_guard lock(mutex_);
  collectors_.erase(id);
}

std::string MetricsRegistry::render() {
  std::lock_guard render(render_mutex_);
  std::vector<std::function<void(Scrape&)>> collectors;
  {
    // Collectors' gauges start empty at every scrape, so that a job that ended disappears.
    std::lock_guard lock(mutex_);
    for (auto& [name, family] : families_) {
      if (family.rebuilt_at_scrape) family.gauge->clear();
    }
    for (const auto& [id, collector] : collectors_) collectors.push_back(collector);
  }
  Scrape scrape(*this);
  for (const auto& collector : collectors) collector(scrape);

  std::string text;
  std::lock_guard lock(mutex_);
  for (const auto& [name, family] : families_) {
    text += "# HELP " + name + " " + escape(family.help, false) + "\n";
    text += "# TYPE " + name + " " + family.type + "\n";
    if (family.counter) {
      std::lock_guard values(family.counter->mutex_);
      if (family.counter->values_.empty() && family.labels.empty()) text += name + " 0\n";
      for (const auto& [labels, value] : family.counter->values_) {
        check_arity(family.labels, labels, name);
        text += name + label_set(family.labels, labels) + " " + format_value(value) + "\n";
      }
    } else if (family.gauge) {
      std::lock_guard values(family.gauge->mutex_);
      for (const auto& [labels, value] : family.gauge->values_) {
        check_arity(family.labels, labels, name);
        text += name + label_set(family.labels, labels) + " " + format_value(value) + "\n";
      }
    } else if (family.histogram) {
      const HistogramFamily& histogram = *family.histogram;
      std::lock_guard values(histogram.mutex_);
      for (const auto& [labels, series] : histogram.series_) {
        check_arity(family.labels, labels, name);
        std::uint64_t cumulative = 0;
        for (std::size_t i = 0; i <= histogram.bounds_.size(); ++i) {
          cumulative += series.counts[i];
          const double bound = i < histogram.bounds_.size() ? histogram.bounds_[i]
                                                            : std::numeric_limits<double>::infinity();
          text += name + "_bucket" + label_set(family.labels, labels, "le=\"" + format_value(bound) + "\"") + " " +
                  std::to_string(cumulative) + "\n";
        }
        text += name + "_sum" + label_set(family.labels, labels) + " " + format_value(series.sum) + "\n";
        text += name + "_count" + label_set(family.labels, labels) + " " + std::to_string(series.count) + "\n";
      }
    }
  }
  return text;
}

}  // namespace fabric::launcher
