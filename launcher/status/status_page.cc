#include "status/status_page.h"

#include <google/protobuf/util/time_util.h>

#include <nlohmann/json.hpp>

#include <set>

#include "jobs/job_state.h"
#include "ranks/rank_metrics.h"

namespace fabric::launcher {

namespace v1 = fabric::v1;
using google::protobuf::util::TimeUtil;
using nlohmann::json;

namespace {

// Unix seconds, or null for an unset timestamp.
json seconds_of(const google::protobuf::Timestamp& time, bool set) {
  if (!set) return nullptr;
  return static_cast<double>(TimeUtil::TimestampToNanoseconds(time)) / 1e9;
}

double seconds_of(const google::protobuf::Duration& duration) {
  return static_cast<double>(duration.seconds()) + duration.nanos() / 1e9;
}

json metrics_of(const google::protobuf::Map<std::string, double>& metrics) {
  json object = json::object();
  for (const auto& [name, value] : metrics) object[name] = value;  // NaN and inf become null
  return object;
}

json optional_step(bool set, std::int64_t step) { return set ? json(step) : json(nullptr); }

json rank_json(const v1::RankProgress& rank, bool straggler) {
  return {{"rank", rank.rank()},
          {"node", rank.node()},
          {"step", optional_step(rank.has_step(), rank.step())},
          {"phase", rank.phase()},
          {"heartbeat_age_seconds", seconds_of(rank.heartbeat_age())},
          {"steps_per_second", rank.steps_per_second()},
          {"samples_per_second", rank.samples_per_second()},
          {"samples", rank.samples()},
          {"metrics", metrics_of(rank.metrics())},
          {"step_lag_seconds", rank.step_lag_seconds()},
          {"straggler", straggler}};
}

json progress_json(const v1::JobProgress& progress) {
  json ranks = json::array();
  for (const auto& rank : progress.ranks()) {
    ranks.push_back(rank_json(rank, progress.has_straggler() && progress.straggler() == rank.rank()));
  }
  json straggler = nullptr;
  if (progress.has_straggler()) {
    straggler = {{"rank", progress.straggler()}, {"message", progress.straggler_message()}};
  }
  return {{"step", optional_step(progress.has_step(), progress.step())},
          {"steps_per_second", progress.steps_per_second()},
          {"samples_per_second", progress.samples_per_second()},
          {"step_seconds", progress.step_seconds()},
          {"metrics", metrics_of(progress.metrics())},
          {"straggler", std::move(straggler)},
          {"ranks", std::move(ranks)}};
}

json failure_json(const v1::FailureSummary& failure) {
  const v1::RankExit& exit = failure.first_failure();
  return {{"generation", failure.generation()},
          {"node", failure.node()},
          {"rank", exit.rank()},
          {"cause", exit_cause(exit)},
          {"message", failure.message()},
          {"time", seconds_of(exit.time(), exit.has_time())}};
}

json node_json(const NodeStatus& node) {
  return {{"name", node.name},
          {"address", node.address},
          {"slots", node.slots},
          {"used_slots", node.used_slots},
          {"heartbeat_age_seconds", node.heartbeat_age_seconds},
          {"jobs", node.jobs}};
}

}  // namespace

StatusPage::StatusPage(std::string server_kind, std::shared_ptr<const Authenticator> authenticator, Source source,
                       std::chrono::milliseconds sample_interval, Clock clock)
    : server_kind_(std::move(server_kind)),
      authenticator_(std::move(authenticator)),
      source_(std::move(source)),
      clock_(std::move(clock)) {
  if (sample_interval.count() > 0) thread_ = std::thread([this, sample_interval] { run(sample_interval); });
}

StatusPage::~StatusPage() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

std::map<std::string, HttpHandler> StatusPage::routes() {
  return {{"/", [](const std::string&) { return HttpReply{.content_type = "text/html; charset=utf-8", .body = kStatusPageHtml}; }},
          {"/status.json", [this](const std::string& authorization) { return status_json(authorization); }}};
}

void StatusPage::run(std::chrono::milliseconds interval) {
  std::unique_lock lock(mutex_);
  while (!wake_.wait_for(lock, interval, [this] { return stopping_; })) {
    lock.unlock();
    sample();
    lock.lock();
  }
}

void StatusPage::sample() {
  const StatusSnapshot snapshot = source_({.user = "status-page", .admin = true});
  const double now = std::chrono::duration<double>(clock_().time_since_epoch()).count();
  std::lock_guard lock(mutex_);
  std::set<std::string> present;
  for (const v1::Job& job : snapshot.jobs) {
    present.insert(job.job_id());
    if (!job.has_progress()) continue;
    std::deque<Point>& points = history_[job.job_id()];
    points.push_back({.time = now, .progress = job.progress()});
    points.back().progress.clear_ranks();  // the job's totals are what is plotted
    while (points.size() > kHistoryPoints) points.pop_front();
  }
  std::erase_if(history_, [&present](const auto& entry) { return !present.contains(entry.first); });
}

HttpReply StatusPage::status_json(const std::string& authorization) const {
  Caller caller;
  if (const grpc::Status status = authenticator_->http_client(authorization, caller); !status.ok()) {
    return {.status = 401,
            .content_type = "application/json",
            .body = json{{"error", status.error_message()}}.dump(-1, ' ', false, json::error_handler_t::replace)};
  }
  const StatusSnapshot snapshot = source_(caller);
  json jobs = json::array();
  std::set<std::string> visible;
  for (const v1::Job& job : snapshot.jobs) {
    visible.insert(job.job_id());
    json failures = json::array();
    for (const auto& failure : job.failures()) failures.push_back(failure_json(failure));
    jobs.push_back({{"id", job.job_id()},
                    {"name", job.spec().name()},
                    {"owner", job.owner()},
                    {"state", state_name(job.state())},
                    {"message", job.message()},
                    {"restart_count", job.restart_count()},
                    {"max_restarts", job.spec().max_restarts()},
                    {"nodes", std::vector<std::string>(job.nodes().begin(), job.nodes().end())},
                    {"create_time", seconds_of(job.create_time(), job.has_create_time())},
                    {"start_time", seconds_of(job.start_time(), job.has_start_time())},
                    {"end_time", seconds_of(job.end_time(), job.has_end_time())},
                    {"progress", job.has_progress() ? progress_json(job.progress()) : json(nullptr)},
                    {"restarts", std::move(failures)},
                    {"history", json::array()}});
  }
  {
    std::lock_guard lock(mutex_);
    for (json& job : jobs) {
      const auto points = history_.find(job["id"].get<std::string>());
      if (points == history_.end()) continue;
      for (const Point& point : points->second) {
        job["history"].push_back({{"time", point.time},
                                  {"step", optional_step(point.progress.has_step(), point.progress.step())},
                                  {"steps_per_second", point.progress.steps_per_second()},
                                  {"samples_per_second", point.progress.samples_per_second()},
                                  {"metrics", metrics_of(point.progress.metrics())}});
      }
    }
  }
  json nodes = json::array();
  for (const NodeStatus& node : snapshot.nodes) nodes.push_back(node_json(node));
  const json status = {{"server", server_kind_},
                       {"version", FABRIC_VERSION},
                       {"time", std::chrono::duration<double>(clock_().time_since_epoch()).count()},
                       {"caller", caller.user},
                       {"nodes", std::move(nodes)},
                       {"jobs", std::move(jobs)}};
  // Job names and messages come from users: bytes that are not UTF-8 are replaced, never thrown on.
  return {.content_type = "application/json", .body = status.dump(-1, ' ', false, json::error_handler_t::replace)};
}

}  // namespace fabric::launcher
