// StatusPage: the operator's page of a fabricd server, served over HTTP next to /metrics
// (`--metrics-listen`) by the coordinator and by `fabricd run`:
//   GET /             the page (status_page.html, built in): jobs, nodes, ranks, restarts and
//                     their causes, stragglers, and live plots of each job's loss and steps/s
//   GET /status.json  what the page draws, for the caller: the jobs ListJobs would show them,
//                     each with its progress history, and the nodes
// The page polls status.json every second. The history is kept here: a thread samples
// every job's progress once a second (the last kHistoryPoints points per job), so the plots
// start from the job's beginning, not from when someone opened the page.
//
// Callers authenticate as on JobService (security/authenticator.h) with the header
// `Authorization: Bearer TOKEN`, which the page asks for when the server answers 401; a
// server run with --insecure and no tokens lets everyone in. The HTTP listener has no TLS
// (it is loopback by default): reach a remote one through an SSH tunnel, not across a
// network that others share, when it needs tokens.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "fabric/v1/job.pb.h"
#include "observability/metrics_server.h"
#include "security/authenticator.h"

namespace fabric::launcher {

// A node as the page lists it.
struct NodeStatus {
  std::string name;
  std::string address;  // its agent's rendezvous address; empty for `fabricd run`
  std::int32_t slots = 0;
  std::int32_t used_slots = 0;
  double heartbeat_age_seconds = 0;
  std::vector<std::string> jobs;  // ids of the jobs with ranks there
};

// What a server shows one caller: the jobs they may see (with Job.progress while running)
// and the nodes.
struct StatusSnapshot {
  std::vector<fabric::v1::Job> jobs;
  std::vector<NodeStatus> nodes;
};

class StatusPage {
 public:
  using Source = std::function<StatusSnapshot(const Caller& caller)>;
  using Clock = std::function<std::chrono::system_clock::time_point()>;
  static constexpr std::size_t kHistoryPoints = 600;  // ten minutes at one a second

  // server_kind: "coordinator" or "fabricd run". sample_interval zero: no sampling thread
  // (tests call sample() themselves).
  StatusPage(std::string server_kind, std::shared_ptr<const Authenticator> authenticator, Source source,
             std::chrono::milliseconds sample_interval = std::chrono::seconds(1),
             Clock clock = [] { return std::chrono::system_clock::now(); });
  ~StatusPage();
  StatusPage(const StatusPage&) = delete;
  StatusPage& operator=(const StatusPage&) = delete;

  // The routes to hand a MetricsServer.
  std::map<std::string, HttpHandler> routes();

  // status.json for a request with this Authorization header ("" when none): 200, or 401
  // with {"error": ...} saying what credentials to send.
  HttpReply status_json(const std::string& authorization) const;
  // Adds a point to the history of every running job. What the thread does each interval.
  void sample();

 private:
  struct Point {
    double time = 0;  // Unix seconds
    fabric::v1::JobProgress progress;
  };
  void run(std::chrono::milliseconds interval);

  const std::string server_kind_;
  const std::shared_ptr<const Authenticator> authenticator_;
  const Source source_;
  const Clock clock_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;                              // guarded by mutex_
  std::map<std::string, std::deque<Point>> history_;  // by job id; guarded by mutex_
  std::thread thread_;
};

// The page itself (launcher/status/status_page.html), built into the binary.
extern const char* const kStatusPageHtml;

}  // namespace fabric::launcher
