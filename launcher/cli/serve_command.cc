// fabricd serve: the coordinator (coordinator/coordinator.h), with an agent in-process unless
// --local-agent 0, so that one command gives a working one-node cluster.
#include <grpcpp/grpcpp.h>
#include <signal.h>

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <functional>
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
  double leader_lease = 5;
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

// serve's exit status when two coordinators share one SQLite file and the other one wrote
// a job this one held: its supervisor starts it again. (On etcd a coordinator that loses the
// leadership follows again instead, in the same process.)
constexpr int kLostLeadership = 5;

std::chrono::milliseconds to_ms(double seconds) { return std::chrono::milliseconds(static_cast<long long>(seconds * 1000)); }

// Why serve stops (a signal: the process ends) or stops leading (the leadership lost: it
// follows again). Set from other threads.
class StopReason {
 public:
  void signalled(int signal) {
    {
      std::lock_guard lock(mutex_);
      if (signal_ != 0) return;
      signal_ = signal;
      if (election_) election_->cancel();
    }
    changed_.notify_all();
  }
  void lost_leadership(const std::string& why) {
    {
      std::lock_guard lock(mutex_);
      if (lost_.empty()) lost_ = why;
    }
    changed_.notify_all();
  }
  // Forgets a loss reported after the leadership it ended: called before each campaign.
  void forget_lost() {
    std::lock_guard lock(mutex_);
    lost_.clear();
  }
  // Blocks until a signal or a lost leadership: returns why the leadership was lost, or
  // std::nullopt for a signal.
  std::optional<std::string> wait() {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return signal_ != 0 || !lost_.empty(); });
    if (signal_ != 0) return std::nullopt;
    return lost_;
  }
  int signal() {
    std::lock_guard lock(mutex_);
    return signal_;
  }
  // The election whose campaign a signal cancels (cancelled at once when signalled already).
  void cancels(LeaderElection* election) {
    std::lock_guard lock(mutex_);
    election_ = election;
    if (signal_ != 0) election_->cancel();
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  int signal_ = 0;
  std::string lost_;
  LeaderElection* election_ = nullptr;
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

// --local-agent's slots, or std::nullopt when it is not a count.
std::optional<int> local_agent_slots(const std::string& flag) {
  if (flag == "auto") return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  try {
    if (const int slots = std::stoi(flag); slots >= 0) return slots;
  } catch (const std::exception&) {
  }
  return std::nullopt;
}

// What every leadership of this process serves with.
struct Serving {
  std::shared_ptr<grpc::ServerCredentials> credentials;
  std::shared_ptr<const Authenticator> authenticator;
  MetricsRegistry metrics;
  // --metrics-listen while following (/metrics and /healthz, which Kubernetes probes: a
  // follower is alive and answers), handed to the leadership's own server, with the status
  // page, when it leads.
  std::unique_ptr<MetricsServer> follower_metrics;
  std::string listen;  // host:port; the port as bound once it is known

  std::string host() const { return listen.substr(0, listen.rfind(':')); }
  std::string port() const { return listen.substr(listen.rfind(':') + 1); }
  void bound(int port) { listen = host() + ":" + std::to_string(port); }
};

// The agent of --local-agent, in this process. Started once the coordinator's port is
// known and kept for the process's life: with etcd it follows whichever coordinator leads,
// as any agent does, so that the leadership moving elsewhere does not stop this node's ranks.
class LocalAgent {
 public:
  LocalAgent(const ServeFlags& flags, int slots, MetricsRegistry& metrics)
      : flags_(flags), slots_(slots), metrics_(metrics) {}
  ~LocalAgent() { stop(); }
  LocalAgent(const LocalAgent&) = delete;
  LocalAgent& operator=(const LocalAgent&) = delete;

  // Starts it toward the coordinator at `listen` (host:port), the first time only.
  void start(const std::string& listen) {
    if (slots_ == 0 || agent_) return;
    const std::string host = listen.substr(0, listen.rfind(':'));
    const std::string reachable_host = host == "0.0.0.0" ? "127.0.0.1" : host;
    agent_ = std::make_unique<Agent>(AgentOptions{
        .coordinator = reachable_host + listen.substr(listen.rfind(':')),
        .node_name = flags_.node_name.empty() ? default_node_name(flags_.security) : flags_.node_name,
        .advertise_host = !flags_.advertise.empty() ? flags_.advertise : reachable_host,
        .rendezvous_listen = host + ":0",
        .slots = slots_,
        .security = flags_.security.transport,
        .metrics = &metrics_});
    thread_ = std::thread([this] { agent_->run(); });
  }
  // Stops its ranks and the agent.
  void stop() {
    if (!agent_) return;
    agent_->stop();
    thread_.join();
    agent_.reset();
  }

 private:
  const ServeFlags& flags_;
  int slots_;
  MetricsRegistry& metrics_;
  std::unique_ptr<Agent> agent_;
  std::thread thread_;
};

// How a leadership takes the port over from the follower before it, and gives it back:
// both bind it at once for a moment (gRPC sets SO_REUSEPORT), so that it never refuses a
// connection across the switch.
struct Handover {
  std::function<void()> serving;  // the leader's server is up: stop the follower's
  std::function<void()> deposed;  // start the follower's, before the leader's stops
};

// One leadership: the coordinator on `store`, serving JobService and AgentService (and
// the metrics and status page) until a signal or until the leadership is lost. Returns the
// process's exit status, or std::nullopt when the leadership was lost (the caller follows
// again, or ends).
std::optional<int> lead(const ServeFlags& flags, Serving& serving, std::unique_ptr<JobStore> store, LocalAgent& agent,
                        StopReason& stop, const Handover& handover = {}) {
  std::optional<Coordinator> coordinator;
  try {
    coordinator.emplace(CoordinatorOptions{
        .store = std::move(store),
        .agent_heartbeat_interval = to_ms(flags.agent_heartbeat_interval),
        .agent_heartbeat_timeout = to_ms(flags.agent_heartbeat_timeout),
        .finished_jobs_kept = flags.finished_jobs_kept,
        .max_pending_jobs_per_user = flags.max_pending_per_user,
        .max_streams_per_user = flags.max_streams_per_user,
        .authenticator = serving.authenticator,
        .metrics = &serving.metrics,
        .on_deposed = [&stop](const std::string& why) { stop.lost_leadership(why); }});
  } catch (const JobStoreUnavailable& error) {
    std::cerr << "fabricd serve: cannot load the job store now (" << error.what() << "); following again" << std::endl;
    return std::nullopt;
  } catch (const JobStoreError& error) {
    return fail(kUsageError, std::string("cannot load the job store: ") + error.what());
  }
  // After the coordinator, so that both go before it does.
  StatusPage status_page("coordinator", serving.authenticator,
                         [&coordinator](const Caller& caller) { return coordinator->status(caller); });
  std::unique_ptr<MetricsServer> metrics_server;
  serving.follower_metrics.reset();  // frees the port for the leader's
  try {
    metrics_server = start_metrics_server(flags.metrics_listen, serving.metrics, "fabricd serve", status_page.routes());
  } catch (const std::exception& error) {
    return fail(kCannotListen, error.what());
  }
  int port = 0;
  enable_server_introspection();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(serving.listen, serving.credentials, &port);
  apply_server_limits(builder, {.max_message_bytes = flags.max_message_bytes});
  add_rpc_metrics(builder, serving.metrics);
  builder.RegisterService(&coordinator->job_service());
  builder.RegisterService(&coordinator->agent_service());
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) return fail(kCannotListen, "cannot listen on " + serving.listen);
  report_serving(*server, {"fabric.v1.JobService", "fabric.v1.AgentService"});
  serving.bound(port);
  std::cerr << "fabricd serve: listening on " << serving.listen << std::endl;
  if (handover.serving) handover.serving();
  agent.start(serving.listen);

  const std::optional<std::string> lost = stop.wait();
  if (lost) {
    std::cerr << "fabricd serve: lost the leadership: " << *lost << std::endl;
    if (handover.deposed) handover.deposed();
  } else {
    std::cerr << "fabricd serve: stopping (signal " << stop.signal() << ")" << std::endl;
    agent.stop();  // first, so that its ranks' exits reach the coordinator
  }
  report_shutting_down(*server);
  coordinator->shutdown();
  // Deposed (the follower's server holds the port already), it must answer nothing more:
  // calls that have their answer get half a second to send it, and streams still open then
  // are cut (their clients reconnect and are sent to the leader). Stopping, two seconds.
  server->Shutdown(std::chrono::system_clock::now() +
                   (lost ? std::chrono::milliseconds(500) : std::chrono::milliseconds(2000)));
  if (lost) return std::nullopt;
  return 0;
}

// With etcd: this process's client of it, its place in the election and the service it
// answers with while it follows, for its life.
struct Candidate {
  std::shared_ptr<EtcdClient> etcd;
  EtcdAddress url;
  std::unique_ptr<LeaderElection> election;
  // `election` once made, for the follower's server threads, which start before it exists.
  std::atomic<LeaderElection*> published{nullptr};
  // A service registers with one server only: each follower's server has its own.
  std::unique_ptr<FollowerService> follower;
  std::unique_ptr<grpc::Server> follower_server;  // while following, and across a switch

  // Serves FollowerService on the coordinator's port (binding it the first time, so that
  // `serving.listen` has it).
  void start_following(Serving& serving) {
    if (follower_server) return;
    follower = std::make_unique<FollowerService>(
        [this] {
          LeaderElection* made = published.load();
          return made ? made->leader() : "";
        },
        [this] {
          LeaderElection* made = published.load();
          return made ? made->trouble() : "";
        });
    int port = 0;
    grpc::ServerBuilder builder;
    builder.AddListeningPort(serving.listen, serving.credentials, &port);
    builder.RegisterCallbackGenericService(follower.get());
    follower_server = builder.BuildAndStart();
    if (!follower_server || port == 0) throw std::runtime_error("cannot listen on " + serving.listen);
    serving.bound(port);
  }
  void stop_following() {
    if (!follower_server) return;
    follower_server->Shutdown(std::chrono::system_clock::now());
    follower_server.reset();
    follower.reset();
  }
};

// A follower's phase: serves FollowerService on the coordinator's port and campaigns until
// this process leads; returns the leader's job store (the follower's server still up: the
// leadership stops it once its own serves), or nullptr when a signal came first. The first
// time, it starts the local agent and makes the election, which proclaims the address.
std::unique_ptr<JobStore> follow_until_leading(const ServeFlags& flags, Serving& serving, Candidate& candidate,
                                               LocalAgent& agent, StopReason& stop) {
  candidate.start_following(serving);
  if (!serving.follower_metrics) {
    serving.follower_metrics = start_metrics_server(flags.metrics_listen, serving.metrics, "fabricd serve (following)");
  }
  agent.start(serving.listen);
  if (!candidate.election) {
    const std::string advertised = (!flags.advertise.empty() ? flags.advertise : serving.host()) + ":" + serving.port();
    candidate.election = std::make_unique<LeaderElection>(
        candidate.etcd, LeaderElectionOptions{.name = candidate.url.prefix + "/leader",
                                              .address = advertised,
                                              .lease_ttl = std::chrono::seconds(static_cast<long>(flags.leader_lease)),
                                              .on_lost = [&stop](const std::string& why) { stop.lost_leadership(why); }});
    candidate.published = candidate.election.get();
    stop.cancels(candidate.election.get());
    std::cerr << "fabricd serve: following on " << serving.listen << " (etcd " << candidate.etcd->endpoints()
              << "); campaigning to lead as " << advertised << std::endl;
  } else {
    std::cerr << "fabricd serve: following on " << serving.listen << "; campaigning again" << std::endl;
  }
  stop.forget_lost();
  const auto fence = candidate.election->campaign();
  if (!fence) {
    candidate.stop_following();
    return nullptr;
  }
  std::cerr << "fabricd serve: leading (election key " << fence->key << ")" << std::endl;
  return open_etcd_job_store(candidate.etcd, candidate.url.prefix, fence);
}

int serve(const ServeFlags& flags) {
  // First: every thread inherits the mask, and gRPC starts its own as soon as the first
  // credentials object exists; one that does not block SIGTERM would die of it.
  block_stop_signals();
  StopReason stop;
  const StopSignalHandler signals([&](int signal, bool) { stop.signalled(signal); });
  Serving serving{.listen = flags.listen};
  try {
    serving.credentials = server_credentials(flags.security.transport, "fabricd serve", flags.listen);
    serving.authenticator = server_authenticator(flags.security);
  } catch (const std::exception& error) {
    return fail(kUsageError, error.what());
  }
  const std::optional<int> slots = local_agent_slots(flags.local_agent);
  if (!slots) return fail(kUsageError, "--local-agent " + flags.local_agent + ": use a number of slots, 0 or auto");
  LocalAgent agent(flags, *slots, serving.metrics);
  const std::string url = store_url(flags);
  if (url.rfind("etcd://", 0) != 0) {
    std::unique_ptr<JobStore> store;
    try {
      store = open_local_store(url);
    } catch (const std::exception& error) {
      return fail(kUsageError, "--store " + url + ": " + error.what());
    }
    const std::optional<int> exit = lead(flags, serving, std::move(store), agent, stop);
    return exit.value_or(kLostLeadership);
  }
  // Followers send clients to the address the leader proclaims: a wildcard reaches no one.
  const std::string listen_host = serving.host();
  if (flags.advertise.empty() && (listen_host == "0.0.0.0" || listen_host == "[::]" || listen_host.empty())) {
    return fail(kUsageError, "--store " + url + " with --listen " + flags.listen +
                                 ": followers send clients and agents to the leader's address, so name this "
                                 "coordinator's: --advertise HOST (its address or DNS name, as its certificate has it)");
  }
  Candidate candidate;
  try {
    candidate.url = parse_etcd_url(url);
    candidate.etcd = std::make_shared<EtcdClient>(candidate.url.endpoints);
  } catch (const std::exception& error) {
    return fail(kUsageError, "--store " + url + ": " + error.what());
  }
  for (;;) {
    std::unique_ptr<JobStore> store;
    try {
      store = follow_until_leading(flags, serving, candidate, agent, stop);
    } catch (const std::exception& error) {
      return fail(kCannotListen, error.what());
    }
    if (!store) return 0;  // a signal while following
    const Handover handover{.serving = [&] { candidate.stop_following(); },
                            .deposed = [&] {
                              try {
                                candidate.start_following(serving);
                              } catch (const std::exception&) {
                                // follow_until_leading tries again, and says why it cannot
                              }
                            }};
    if (const std::optional<int> exit = lead(flags, serving, std::move(store), agent, stop, handover)) return *exit;
  }
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
                      "the address other nodes reach this machine at: the local agent's, and with etcd the one "
                      "this coordinator proclaims when it leads (default: the --listen host; for the agent "
                      "127.0.0.1 when that is 0.0.0.0, which serves one node only; with etcd it must be given then)");
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
