// fabricd serve: the coordinator (coordinator/coordinator.h), with an agent in-process unless
// --local-agent 0, so that one command gives a working one-node cluster.
#include <grpcpp/grpcpp.h>
#include <signal.h>

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <optional>
#include <iostream>
#include <thread>

#include "agent/agent.h"
#include "cli/commands.h"
#include "cli/job_flags.h"
#include "cli/security_flags.h"
#include "cli/signals.h"
#include "coordinator/coordinator.h"
#include "etcd/etcd_client.h"
#include "etcd/etcd_job_store.h"
#include "etcd/leader_election.h"
#include "jobs/job_store.h"
#include "leader/follower_service.h"
#include "cli/metrics_flags.h"
#include "observability/introspection.h"
#include "observability/rpc_metrics.h"

namespace fabric::launcher::cli {

namespace {

struct ServeFlags {
  std::string listen = "127.0.0.1:7070";
  std::string state_dir;
  std::string store;
  double leader_lease = 3;
  std::string local_agent = "auto";
  std::string node_name;
  std::string advertise;
  double agent_heartbeat_interval = 1, agent_heartbeat_timeout = 5;
  std::size_t finished_jobs_kept = 1000;
  std::size_t max_pending_per_user = 100, max_streams_per_user = 32;
  int max_message_bytes = 4 << 20;
  std::string metrics_listen;
  SecurityFlags security;
};

// serve's exit status when this coordinator lost the leadership to another: its supervisor
// starts it again, and it follows.
constexpr int kLostLeadership = 5;

std::chrono::milliseconds to_ms(double seconds) { return std::chrono::milliseconds(static_cast<long long>(seconds * 1000)); }

// Why serve stops: a signal, or the leadership lost. Set from other threads; a campaign in
// progress is cancelled by it.
struct StopReason {
  std::mutex mutex;
  std::condition_variable changed;
  int signal = 0;
  std::string lost_leadership;
  LeaderElection* campaigning = nullptr;

  void set(int by_signal, const std::string& lost) {
    {
      std::lock_guard lock(mutex);
      if (signal != 0 || !lost_leadership.empty()) return;
      signal = by_signal;
      lost_leadership = lost;
      if (campaigning) campaigning->cancel();
    }
    changed.notify_all();
  }
  void wait() {
    std::unique_lock lock(mutex);
    changed.wait(lock, [&] { return signal != 0 || !lost_leadership.empty(); });
  }
  // Registers the election whose campaign a stop cancels; false when stopped already.
  bool campaign_with(LeaderElection* election) {
    std::lock_guard lock(mutex);
    campaigning = election;
    return signal == 0 && lost_leadership.empty();
  }
};

// The store the flags name: --store sqlite:PATH | etcd://…, or --state DIR (sqlite:DIR/fabricd.db),
// or none (memory).
std::string store_url(const ServeFlags& flags) {
  if (!flags.store.empty()) return flags.store;
  if (!flags.state_dir.empty()) {
    std::filesystem::create_directories(flags.state_dir);
    return "sqlite:" + flags.state_dir + "/fabricd.db";
  }
  return "";
}

std::unique_ptr<JobStore> open_local_store(const std::string& url) {
  if (url.empty()) {
    std::cerr << "fabricd serve: no --state or --store: jobs are kept in memory only and lost when this process ends"
              << std::endl;
    return in_memory_job_store();
  }
  if (url.rfind("sqlite:", 0) == 0) return open_sqlite_job_store(url.substr(7));
  throw std::invalid_argument("'" + url + "' names no job store; use sqlite:PATH or etcd://host:port[,...][/prefix]");
}

// With etcd: this process's client of it and its place in the election.
struct Candidate {
  std::shared_ptr<EtcdClient> etcd;
  EtcdAddress url;
  std::unique_ptr<LeaderElection> election;
  // `election` once made, for the follower's server threads, which start before it exists.
  std::atomic<LeaderElection*> published{nullptr};
};

// A follower's phase: serves FollowerService on the coordinator's port and campaigns until
// this process leads; returns the leader's job store, or nullptr when stopped first.
// `listen` is set to the host:port bound (the port is known once bound), for the leader's
// server to take over.
std::unique_ptr<JobStore> follow_until_leading(const ServeFlags& flags, Candidate& candidate,
                                               const std::shared_ptr<grpc::ServerCredentials>& credentials,
                                               StopReason& stop, std::string& listen) {
  FollowerService follower([&candidate] {
    LeaderElection* election = candidate.published.load();
    return election ? election->leader() : "";
  });
  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort(flags.listen, credentials, &port);
  builder.RegisterCallbackGenericService(&follower);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) throw std::runtime_error("cannot listen on " + flags.listen);
  const std::string host = flags.listen.substr(0, flags.listen.rfind(':'));
  listen = host + ":" + std::to_string(port);
  const std::string advertised = (!flags.advertise.empty() ? flags.advertise : host) + ":" + std::to_string(port);
  candidate.election = std::make_unique<LeaderElection>(
      candidate.etcd, LeaderElectionOptions{.name = candidate.url.prefix + "/leader",
                                            .address = advertised,
                                            .lease_ttl = std::chrono::seconds(static_cast<long>(flags.leader_lease)),
                                            .on_lost = [&stop](const std::string& why) { stop.set(0, why); }});
  candidate.published = candidate.election.get();
  std::cerr << "fabricd serve: following on " << listen << " (etcd " << candidate.etcd->endpoints()
            << "); campaigning to lead as " << advertised << std::endl;
  const auto fence = stop.campaign_with(candidate.election.get()) ? candidate.election->campaign() : std::nullopt;
  stop.campaign_with(nullptr);
  server->Shutdown(std::chrono::system_clock::now());
  if (!fence) return nullptr;
  std::cerr << "fabricd serve: leading (election key " << fence->key << ")" << std::endl;
  return open_etcd_job_store(candidate.etcd, candidate.url.prefix, fence);
}

int serve(const ServeFlags& flags) {
  // First: every thread inherits the mask, and gRPC starts its own as soon as the first
  // credentials object exists; one that does not block SIGTERM would die of it.
  block_stop_signals();
  StopReason stop;
  Candidate candidate;
  const StopSignalHandler signals([&](int signal, bool) { stop.set(signal, ""); });
  std::unique_ptr<JobStore> store;
  const std::string url = store_url(flags);
  std::shared_ptr<grpc::ServerCredentials> credentials;
  std::shared_ptr<const Authenticator> authenticator;
  try {
    credentials = server_credentials(flags.security.transport, "fabricd serve", flags.listen);
    authenticator = server_authenticator(flags.security);
  } catch (const std::exception& error) {
    return fail(kUsageError, error.what());
  }
  std::string listen = flags.listen;
  try {
    if (url.rfind("etcd://", 0) == 0) {
      candidate.url = parse_etcd_url(url);
      candidate.etcd = std::make_shared<EtcdClient>(candidate.url.endpoints);
      store = follow_until_leading(flags, candidate, credentials, stop, listen);
      if (!store) return 0;  // stopped while following
    } else {
      store = open_local_store(url);
    }
  } catch (const std::exception& error) {
    return fail(kUsageError, "--store " + url + ": " + error.what());
  }
  int slots = 0;
  if (flags.local_agent == "auto") {
    slots = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  } else {
    try {
      slots = std::stoi(flags.local_agent);
    } catch (const std::exception&) {
      slots = -1;
    }
    if (slots < 0) return fail(kUsageError, "--local-agent " + flags.local_agent + ": use a number of slots, 0 or auto");
  }
  MetricsRegistry metrics;
  std::optional<Coordinator> coordinator;
  try {
    coordinator.emplace(CoordinatorOptions{.store = std::move(store),
                                           .agent_heartbeat_interval = to_ms(flags.agent_heartbeat_interval),
                                           .agent_heartbeat_timeout = to_ms(flags.agent_heartbeat_timeout),
                                           .finished_jobs_kept = flags.finished_jobs_kept,
                                           .max_pending_jobs_per_user = flags.max_pending_per_user,
                                           .max_streams_per_user = flags.max_streams_per_user,
                                           .authenticator = authenticator,
                                           .metrics = &metrics,
                                           .on_deposed = [&stop](const std::string& why) { stop.set(0, why); }});
  } catch (const JobStoreError& error) {
    return fail(kUsageError, std::string("cannot load the job store: ") + error.what());
  }
  // After the coordinator, so that both go before it does.
  StatusPage status_page("coordinator", authenticator,
                         [&coordinator](const Caller& caller) { return coordinator->status(caller); });
  std::unique_ptr<MetricsServer> metrics_server;
  try {
    metrics_server = start_metrics_server(flags.metrics_listen, metrics, "fabricd serve", status_page.routes());
  } catch (const std::exception& error) {
    return fail(kCannotListen, error.what());
  }
  int port = 0;
  enable_server_introspection();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(listen, credentials, &port);
  apply_server_limits(builder, {.max_message_bytes = flags.max_message_bytes});
  add_rpc_metrics(builder, metrics);
  builder.RegisterService(&coordinator->job_service());
  builder.RegisterService(&coordinator->agent_service());
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) return fail(kCannotListen, "cannot listen on " + listen);
  report_serving(*server, {"fabric.v1.JobService", "fabric.v1.AgentService"});
  const std::string host = listen.substr(0, listen.rfind(':'));
  const std::string address = host + ":" + std::to_string(port);
  std::cerr << "fabricd serve: listening on " << address << std::endl;

  std::unique_ptr<Agent> agent;
  std::thread agent_thread;
  if (slots > 0) {
    agent = std::make_unique<Agent>(AgentOptions{
        .coordinator = (host == "0.0.0.0" ? "127.0.0.1" : host) + ":" + std::to_string(port),
        .node_name = flags.node_name.empty() ? default_node_name(flags.security) : flags.node_name,
        .advertise_host = !flags.advertise.empty() ? flags.advertise : host == "0.0.0.0" ? "127.0.0.1" : host,
        .rendezvous_listen = host + ":0",
        .slots = slots,
        .security = flags.security.transport,
        .metrics = &metrics});
    agent_thread = std::thread([&agent] { agent->run(); });
  }
  stop.wait();
  if (stop.signal != 0) {
    std::cerr << "fabricd serve: stopping (signal " << stop.signal << ")" << std::endl;
  } else {
    std::cerr << "fabricd serve: lost the leadership, stopping: " << stop.lost_leadership << std::endl;
  }
  if (agent) {
    agent->stop();
    agent_thread.join();
  }
  report_shutting_down(*server);
  coordinator->shutdown();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  return stop.signal != 0 ? 0 : kLostLeadership;
}

}  // namespace

Registered add_serve(CLI::App& app) {
  auto* command = app.add_subcommand("serve", "Run the coordinator of a fabricd cluster: JobService for clients, "
                                              "AgentService for node agents");
  auto flags = std::make_shared<ServeFlags>();
  command->add_option("--listen", flags->listen, "host:port to serve on (port 0: any free port)")->capture_default_str();
  command->add_option("--state", flags->state_dir,
                      "directory of the job store (fabricd.db, SQLite): jobs survive a restart of the coordinator");
  command->add_option("--store", flags->store,
                      "the job store: sqlite:PATH (as --state does), or etcd://host:port[,host:port...][/prefix], "
                      "where several coordinators elect one leader and the others follow")
      ->excludes(command->get_option("--state"));
  command->add_option("--leader-lease", flags->leader_lease,
                      "with etcd: seconds after which a silent leader's lease expires and a follower leads")
      ->check(CLI::Range(2.0, 60.0))
      ->capture_default_str();
  command->add_option("--local-agent", flags->local_agent,
                      "slots of an agent run in this process (auto: one per CPU core; 0: none, agents join from "
                      "other nodes)")
      ->capture_default_str();
  command->add_option("--node-name", flags->node_name,
                      "the local agent's node name (default: --tls-cert's common name, else the host name)");
  command->add_option("--advertise", flags->advertise,
                      "the address other nodes reach the local agent at (default: the --listen host; 127.0.0.1 "
                      "when that is 0.0.0.0, which serves one node only)");
  command->add_option("--agent-heartbeat-interval", flags->agent_heartbeat_interval,
                      "seconds between an agent's heartbeats")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  command->add_option("--agent-heartbeat-timeout", flags->agent_heartbeat_timeout,
                      "seconds of silence after which an agent is lost and its ranks count as failed")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  command->add_option("--history", flags->finished_jobs_kept, "finished jobs kept in the history")
      ->capture_default_str();
  command->add_option("--max-pending-per-user", flags->max_pending_per_user,
                      "PENDING jobs one user may have; more are refused RESOURCE_EXHAUSTED")
      ->capture_default_str();
  command->add_option("--max-streams-per-user", flags->max_streams_per_user,
                      "watch/logs streams one user may hold open; more are refused RESOURCE_EXHAUSTED")
      ->capture_default_str();
  command->add_option("--max-message-size", flags->max_message_bytes, "the largest request accepted, in bytes")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  add_security_flags(*command, flags->security, SecurityRole::kServer);
  add_metrics_flag(*command, flags->metrics_listen);
  return {command, [flags](const std::vector<std::string>&) { return serve(*flags); }};
}

}  // namespace fabric::launcher::cli
