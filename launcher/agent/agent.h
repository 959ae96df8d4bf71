// Agent: a node of a fabricd cluster (`fabricd agent`). It dials the coordinator (never the
// reverse), registers, heartbeats, keeps the assignment stream open and carries out what
// arrives on it: StartRanks runs one generation of a job's ranks on this node with the
// same RankGroup and HealthWatch as `fabricd run`; StopJob stops them. It serves the
// RendezvousService of its ranks (their heartbeats and error reports, and the job's store
// when this node is node rank 0), reports every rank's exit until the coordinator has it,
// and pushes the ranks' output lines for StreamLogs.
//
// Sessions follow agent.proto's clean-slate rule: while the coordinator is unreachable the
// ranks keep running and the agent retries with backoff; once the coordinator answers
// NOT_FOUND (it ended the session), the agent stops every rank and registers afresh.
//
// One Agent per process; run() blocks until stop() (from any thread).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "observability/metrics.h"
#include "security/credentials.h"

namespace fabric::launcher {

struct AgentOptions {
  // host:port of `fabricd serve`; several, comma-separated, for coordinators that elect a
  // leader (the agent follows it).
  std::string coordinator;
  std::string node_name;    // unique in the cluster; Job.nodes shows it
  // The host other nodes reach this one at: its RendezvousService (the job's store when
  // it holds node rank 0) and MASTER_ADDR are advertised with it.
  std::string advertise_host = "127.0.0.1";
  // Where the RendezvousService listens (port 0: any free port).
  std::string rendezvous_listen = "0.0.0.0:0";
  std::int32_t slots = 1;
  // TLS toward the coordinator (a node certificate: mutual TLS) and for the ranks'
  // RendezvousService; or plain text with `insecure`.
  TransportSecurity security;
  // The longest wait between reconnection attempts (backoff doubles from 100 ms).
  std::chrono::milliseconds max_backoff = std::chrono::seconds(2);
  // Prometheus families (ranks/rank_metrics.h, the rendezvous' RPCs) when set; must outlive
  // the agent.
  MetricsRegistry* metrics = nullptr;
};

class Agent {
 public:
  // Starts the RendezvousService; throws std::runtime_error when it cannot listen, and
  // CredentialsError when the TLS files cannot be read.
  explicit Agent(AgentOptions options);
  ~Agent();
  Agent(const Agent&) = delete;
  Agent& operator=(const Agent&) = delete;

  void run();
  // Stops every rank (SIGTERM, grace period, SIGKILL) and makes run() return.
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace fabric::launcher
