// Coordinator: the control plane of a fabricd cluster (`fabricd serve`). It serves
// JobService to clients and AgentService to node agents, places each job generation on
// agents with free slots, restarts a job on every node when a rank fails or a node is lost,
// and keeps every job in a JobStore, so that a coordinator killed and restarted re-adopts
// the jobs its agents still run instead of restarting them.
//
// All state sits behind one mutex; RPC handlers and the reconcile thread (which expires
// silent agents and places waiting jobs every `tick`) take it briefly and never across a
// network write. WatchJob and StreamLogs wait on one condition variable, notified on every
// change; each session's assignment stream on one of its own.
#pragma once

#include <chrono>
#include <functional>
#include <memory>

#include "fabric/v1/agent.grpc.pb.h"
#include "fabric/v1/job.grpc.pb.h"
#include "jobs/job_store.h"
#include "observability/metrics.h"
#include "security/authenticator.h"
#include "status/status_page.h"

namespace fabric::launcher {

struct CoordinatorOptions {
  std::unique_ptr<JobStore> store;  // required
  // What Register tells agents; an agent silent for the timeout is lost.
  std::chrono::milliseconds agent_heartbeat_interval = std::chrono::seconds(1);
  std::chrono::milliseconds agent_heartbeat_timeout = std::chrono::seconds(5);
  // Finished jobs kept in the history (the oldest are forgotten first).
  std::size_t finished_jobs_kept = 1000;
  // SubmitJob answers RESOURCE_EXHAUSTED beyond this many unfinished jobs...
  std::size_t max_unfinished_jobs = 10000;
  // ...or this many PENDING jobs of the caller's.
  std::size_t max_pending_jobs_per_user = 100;
  // WatchJob and StreamLogs answer RESOURCE_EXHAUSTED beyond this many open per user.
  std::size_t max_streams_per_user = 32;
  // Who may call: clients of JobService (a job's owner, or an admin) and nodes of
  // AgentService. The default lets everyone in as an admin, for in-process tests; fabricd
  // serve passes the one its flags describe.
  std::shared_ptr<const Authenticator> authenticator =
      std::make_shared<const Authenticator>(Authenticator::open_to_all());
  // How often the reconcile thread looks at agents and waiting jobs (it also runs at once
  // on every change).
  std::chrono::milliseconds tick = std::chrono::milliseconds(100);
  // What agent heartbeat timeouts are measured with; tests inject a fake clock.
  std::function<std::chrono::steady_clock::time_point()> clock = [] { return std::chrono::steady_clock::now(); };
  // Prometheus families when set (must outlive the coordinator): fabricd_jobs{state},
  // fabricd_agents, and ranks/rank_metrics.h's exits and restarts as agents report them.
  MetricsRegistry* metrics = nullptr;
  // Called once, with the store's words, when a write finds that another coordinator wrote
  // the job store since (JobStoreConflict): this one no longer leads and must stop acting.
  // `fabricd serve` exits so that its supervisor starts it again as a follower.
  std::function<void(const std::string&)> on_deposed;
};

class Coordinator {
 public:
  // Loads the store's jobs and sessions (sessions get a fresh heartbeat timeout to come
  // back in) and starts the reconcile thread. Throws JobStoreError.
  explicit Coordinator(CoordinatorOptions options);
  ~Coordinator();
  Coordinator(const Coordinator&) = delete;
  Coordinator& operator=(const Coordinator&) = delete;

  fabric::v1::JobService::Service& job_service();
  fabric::v1::AgentService::Service& agent_service();

  // What the status page shows `caller`: the jobs ListJobs would (newest first, at most
  // 100, with their progress), and every node in session.
  StatusSnapshot status(const Caller& caller);

  // Ends every stream with UNAVAILABLE and stops the reconcile thread. Call before
  // grpc::Server::Shutdown (which waits for streams). Idempotent.
  void shutdown();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace fabric::launcher
