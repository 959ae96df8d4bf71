// Prometheus metrics: a registry of counter, gauge and histogram families with labels, and
// their text exposition (format 0.0.4, what Prometheus scrapes from /metrics). Ours and
// small, since prometheus-cpp is not packaged in Debian; `promtool check metrics` and a
// real Prometheus server check its output in the tests.
//
//   MetricsRegistry metrics;
//   auto& exits = metrics.counter("fabricd_rank_exits_total", "Rank processes that ended, by cause", {"cause"});
//   exits.add({"signal"});
//   metrics.add_collector([&](MetricsRegistry::Scrape& scrape) {     // values known only at scrape time
//     scrape.gauge("fabricd_jobs", "Jobs by state", {"state"}).set({"RUNNING"}, running_jobs());
//   });
//   std::string text = metrics.render();
//
// Every method is thread-safe. Families live as long as the registry; a family's labels are
// fixed when it is made, and each call passes one value per label, in that order.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace fabric::launcher {

using LabelValues = std::vector<std::string>;

// Prometheus' default buckets (seconds), for RPC and call latencies.
const std::vector<double>& default_latency_buckets();

class CounterFamily {
 public:
  void add(const LabelValues& labels, double amount = 1);
  double value(const LabelValues& labels) const;  // 0 when never added to

 private:
  friend class MetricsRegistry;
  mutable std::mutex mutex_;
  std::map<LabelValues, double> values_;
};

class GaugeFamily {
 public:
  void set(const LabelValues& labels, double value);
  void add(const LabelValues& labels, double amount);
  void clear();  // drops every series (for gauges rebuilt at each scrape)

 private:
  friend class MetricsRegistry;
  mutable std::mutex mutex_;
  std::map<LabelValues, double> values_;
};

class HistogramFamily {
 public:
  explicit HistogramFamily(std::vector<double> bounds);
  void observe(const LabelValues& labels, double value);

 private:
  friend class MetricsRegistry;
  struct Series {
    std::vector<std::uint64_t> counts;  // per bucket, not cumulative; the last is +Inf
    double sum = 0;
    std::uint64_t count = 0;
  };
  const std::vector<double> bounds_;  // ascending upper bounds, +Inf implied
  mutable std::mutex mutex_;
  std::map<LabelValues, Series> series_;
};

class MetricsRegistry {
 public:
  MetricsRegistry() = default;
  MetricsRegistry(const MetricsRegistry&) = delete;
  MetricsRegistry& operator=(const MetricsRegistry&) = delete;

  // The family of that name, made on first use. A name must keep its type, help and labels
  // (std::logic_error otherwise: a programming error, not a runtime condition).
  CounterFamily& counter(const std::string& name, const std::string& help, std::vector<std::string> labels = {});
  GaugeFamily& gauge(const std::string& name, const std::string& help, std::vector<std::string> labels = {});
  HistogramFamily& histogram(const std::string& name, const std::string& help, std::vector<std::string> labels = {},
                             std::vector<double> bounds = default_latency_buckets());

  // What a collector may fill in at scrape time: gauges of its own, rebuilt every scrape.
  class Scrape {
   public:
    GaugeFamily& gauge(const std::string& name, const std::string& help, std::vector<std::string> labels = {});

   private:
    friend class MetricsRegistry;
    explicit Scrape(MetricsRegistry& registry) : registry_(registry) {}
    MetricsRegistry& registry_;
  };
  // Runs at every render(), before the families are written. Collectors must not outlive
  // what they read: remove them (the returned id) before it goes.
  int add_collector(std::function<void(Scrape&)> collector);
  void remove_collector(int id);

  // The text exposition of every family, sorted by name.
  std::string render();

 private:
  struct Family {
    std::string type;  // counter, gauge, histogram
    std::string help;
    std::vector<std::string> labels;
    std::unique_ptr<CounterFamily> counter;
    std::unique_ptr<GaugeFamily> gauge;
    std::unique_ptr<HistogramFamily> histogram;
    bool rebuilt_at_scrape = false;  // a collector's gauge: cleared before every scrape
  };
  Family& family(const std::string& name, const std::string& type, const std::string& help,
                 std::vector<std::string> labels);

  std::mutex mutex_;  // guards families_ and collectors_ (not the values: each family has its own)
  std::map<std::string, Family> families_;
  std::map<int, std::function<void(Scrape&)>> collectors_;
  int next_collector_ = 0;
  std::mutex render_mutex_;  // one scrape at a time: collectors rebuild shared gauges
};

}  // namespace fabric::launcher
