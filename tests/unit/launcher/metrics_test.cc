// The Prometheus registry and its text exposition (launcher/observability/metrics.h), the
// /metrics endpoint (metrics_server.h), and the RPC interceptor (rpc_metrics.h). The
// exposition is checked line by line against the format's rules and by Prometheus' own
// `promtool check metrics`.
#include "observability/metrics.h"

#include <gtest/gtest.h>
#include <stdio.h>

#include <limits>
#include <string>

#include "observability/metrics_server.h"
#include "support/processes.h"

namespace fabric::launcher {
namespace {

using fabric::testing::CommandResult;
using fabric::testing::run_command;

bool has_line(const std::string& text, const std::string& line) {
  return ("\n" + text).find("\n" + line + "\n") != std::string::npos;
}

TEST(Metrics, CountersAndGaugesRenderWithHelpTypeAndSortedLabels) {
  MetricsRegistry metrics;
  CounterFamily& exits = metrics.counter("fabricd_rank_exits_total", "Rank processes that ended", {"cause"});
  exits.add({"signal"});
  exits.add({"signal"});
  exits.add({"error"}, 3);
  metrics.gauge("fabricd_agents", "Agents in session").set({}, 4);
  metrics.counter("fabricd_never_total", "A counter without labels, never added to");
  const std::string text = metrics.render();
  EXPECT_TRUE(has_line(text, "# HELP fabricd_rank_exits_total Rank processes that ended")) << text;
  EXPECT_TRUE(has_line(text, "# TYPE fabricd_rank_exits_total counter")) << text;
  EXPECT_TRUE(has_line(text, "fabricd_rank_exits_total{cause=\"error\"} 3")) << text;
  EXPECT_TRUE(has_line(text, "fabricd_rank_exits_total{cause=\"signal\"} 2")) << text;
  EXPECT_TRUE(has_line(text, "fabricd_agents 4")) << text;
  EXPECT_TRUE(has_line(text, "fabricd_never_total 0")) << "a labelless counter exists from the start:\n" << text;
  EXPECT_LT(text.find("fabricd_agents"), text.find("fabricd_rank_exits_total")) << "families sorted by name";
  EXPECT_DOUBLE_EQ(exits.value({"signal"}), 2);
}

TEST(Metrics, LabelValuesAndHelpAreEscaped) {
  MetricsRegistry metrics;
  metrics.gauge("g", "help with \\ and\nnewline", {"job"}).set({"a\"b\\c\nd"}, 1.5);
  const std::string text = metrics.render();
  EXPECT_TRUE(has_line(text, "# HELP g help with \\\\ and\\nnewline")) << text;
  EXPECT_TRUE(has_line(text, "g{job=\"a\\\"b\\\\c\\nd\"} 1.5")) << text;
}

TEST(Metrics, HistogramBucketsAreCumulativeWithInfSumAndCount) {
  MetricsRegistry metrics;
  HistogramFamily& latency = metrics.histogram("rpc_seconds", "latency", {"method"}, {0.1, 1});
  latency.observe({"Get"}, 0.05);
  latency.observe({"Get"}, 0.1);  // on a bound: counted in that bucket (le is "less or equal")
  latency.observe({"Get"}, 0.5);
  latency.observe({"Get"}, 7);
  const std::string text = metrics.render();
  EXPECT_TRUE(has_line(text, "rpc_seconds_bucket{method=\"Get\",le=\"0.1\"} 2")) << text;
  EXPECT_TRUE(has_line(text, "rpc_seconds_bucket{method=\"Get\",le=\"1\"} 3")) << text;
  EXPECT_TRUE(has_line(text, "rpc_seconds_bucket{method=\"Get\",le=\"+Inf\"} 4")) << text;
  EXPECT_TRUE(has_line(text, "rpc_seconds_sum{method=\"Get\"} 7.65")) << text;
  EXPECT_TRUE(has_line(text, "rpc_seconds_count{method=\"Get\"} 4")) << text;
}

TEST(Metrics, CollectorGaugesAreRebuiltAtEveryScrape) {
  MetricsRegistry metrics;
  std::vector<std::string> running = {"job-a", "job-b"};
  const int id = metrics.add_collector([&](MetricsRegistry::Scrape& scrape) {
    GaugeFamily& age = scrape.gauge("fabricd_rank_heartbeat_age_seconds", "age", {"job"});
    for (const auto& job : running) age.set({job}, 0.25);
  });
  EXPECT_TRUE(has_line(metrics.render(), "fabricd_rank_heartbeat_age_seconds{job=\"job-b\"} 0.25"));
  running = {"job-a"};  // job-b ended: its series must go, not stay at its last value
  std::string text = metrics.render();
  EXPECT_TRUE(has_line(text, "fabricd_rank_heartbeat_age_seconds{job=\"job-a\"} 0.25")) << text;
  EXPECT_EQ(text.find("job-b"), std::string::npos) << text;
  metrics.remove_collector(id);
  text = metrics.render();
  EXPECT_EQ(text.find("job-a"), std::string::npos) << "a removed collector's series go with it:\n" << text;
}

TEST(Metrics, MisuseIsALogicError) {
  MetricsRegistry metrics;
  metrics.counter("x_total", "x", {"a"});
  EXPECT_THROW(metrics.gauge("x_total", "x", {"a"}), std::logic_error) << "one name, one type";
  EXPECT_THROW(metrics.counter("x_total", "x", {"b"}), std::logic_error) << "one name, one label set";
  EXPECT_THROW(metrics.counter("x_total", "x", {"a"}).add({"v"}, -1), std::logic_error) << "counters only go up";
  EXPECT_THROW(metrics.histogram("h", "h", {}, {1, 0.5}), std::logic_error) << "bounds ascend";
}

// Prometheus' own checker accepts a registry with every kind of family and odd values.
TEST(Metrics, PromtoolAcceptsTheExposition) {
  MetricsRegistry metrics;
  metrics.counter("fabricd_job_restarts_total", "Restarts", {"cause"}).add({"hung"});
  metrics.gauge("fabricd_jobs", "Jobs by state", {"state"}).set({"RUNNING"}, 2);
  metrics.gauge("fabricd_weird", "Odd values", {"kind"}).set({"inf"}, std::numeric_limits<double>::infinity());
  metrics.gauge("fabricd_weird", "Odd values", {"kind"}).set({"nan"}, std::numeric_limits<double>::quiet_NaN());
  metrics.gauge("fabricd_weird", "Odd values", {"kind"}).set({"tiny \"quoted\""}, 1e-300);
  metrics.histogram("grpc_server_handling_seconds", "Latency", {"grpc_method"}).observe({"Get"}, 0.003);
  const std::string file = ::testing::TempDir() + "/metrics.txt";
  FILE* out = ::fopen(file.c_str(), "w");
  ASSERT_NE(out, nullptr);
  const std::string text = metrics.render();
  ::fwrite(text.data(), 1, text.size(), out);
  ::fclose(out);
  const CommandResult check = run_command("promtool check metrics < " + file);
  EXPECT_EQ(check.status, 0) << check.output << "\n" << text;
}

TEST(MetricsServer, ServesTheExpositionAndALivenessCheckOverHttp) {
  MetricsRegistry metrics;
  metrics.counter("fabricd_rank_exits_total", "exits", {"cause"}).add({"signal"});
  MetricsServer server("127.0.0.1:0", metrics);
  const CommandResult scrape = run_command("curl -sS -i http://" + server.address() + "/metrics");
  EXPECT_EQ(scrape.status, 0) << scrape.output;
  EXPECT_NE(scrape.output.find("Content-Type: text/plain; version=0.0.4"), std::string::npos) << scrape.output;
  EXPECT_NE(scrape.output.find("fabricd_rank_exits_total{cause=\"signal\"} 1"), std::string::npos) << scrape.output;
  const CommandResult health = run_command("curl -sS http://" + server.address() + "/healthz");
  EXPECT_EQ(health.output, "ok\n");
  const CommandResult missing = run_command("curl -sS -o /dev/null -w '%{http_code}' http://" + server.address() + "/x");
  EXPECT_EQ(missing.output, "404");
}

TEST(MetricsServer, RefusesAnAddressItCannotListenOn) {
  MetricsRegistry metrics;
  EXPECT_THROW(MetricsServer("no-port", metrics), std::runtime_error);
  EXPECT_THROW(MetricsServer("127.0.0.1:99999", metrics), std::runtime_error);
  MetricsServer first("127.0.0.1:0", metrics);
  EXPECT_THROW(MetricsServer(first.address(), metrics), std::runtime_error) << "the port is taken";
}

}  // namespace
}  // namespace fabric::launcher
