#include "coordinator/coordinator.h"

#include <google/protobuf/util/message_differencer.h>
#include <google/protobuf/util/time_util.h>

#include <algorithm>
#include <condition_variable>
#include <iostream>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <thread>
#include <utility>

#include "jobs/log_buffer.h"
#include "coordinator/placement.h"
#include "coordinator/progress_board.h"
#include "jobs/job_feed.h"
#include "jobs/job_spec.h"
#include "jobs/job_state.h"
#include "ranks/job_progress.h"
#include "ranks/rank_metrics.h"
#include "ranks/rank_environment.h"
#include "security/secrets.h"
#include "security/stream_limiter.h"

namespace fabric::launcher {

namespace v1 = fabric::v1;
using Clock = std::chrono::steady_clock;
using google::protobuf::util::TimeUtil;
using std::chrono::milliseconds;

namespace {

// How long an assignment stream sleeps between looks at its client's cancellation. Long:
// everything else that ends it (a new stream, the session's end, shutdown) wakes it, and
// with a thousand agents short polls are most of the coordinator's CPU.
constexpr milliseconds kStreamPoll{5000};

std::string random_hex(int digits) {
  static std::mt19937_64 generator{std::random_device{}()};
  static std::mutex mutex;
  std::lock_guard lock(mutex);
  std::ostringstream text;
  text << std::hex;
  for (int i = 0; i < digits; ++i) text << (generator() % 16);
  return text.str();
}

// "digits-3fa9c2d1": the job's name made safe for file names and environment values.
std::string new_job_id(const std::string& name) {
  std::string id;
  for (const char c : name.substr(0, 24)) id += std::isalnum(static_cast<unsigned char>(c)) || c == '-' ? c : '-';
  return (id.empty() ? std::string("job") : id) + "-" + random_hex(8);
}

google::protobuf::Timestamp now_timestamp() { return TimeUtil::GetCurrentTime(); }

std::string host_of(const std::string& address) { return address.substr(0, address.rfind(':')); }

grpc::Status session_ended(const std::string& agent_id) {
  return {grpc::StatusCode::NOT_FOUND,
          "the session '" + agent_id + "' has ended (the coordinator stopped hearing from it); stop every rank and "
          "register again"};
}

std::string describe_exit(const v1::RankExit& exit) {
  switch (exit.cause()) {
    case v1::RankExit::CAUSE_EXITED: return "exited with code " + std::to_string(exit.exit_code());
    case v1::RankExit::CAUSE_SIGNALED: return "was killed by signal " + std::to_string(exit.signal());
    case v1::RankExit::CAUSE_HEARTBEAT_TIMEOUT: return "hung (no heartbeat within the timeout) and was killed";
    case v1::RankExit::CAUSE_SPAWN_FAILED: return "could not be started";
    case v1::RankExit::CAUSE_NODE_LOST: return "was lost with its node";
    case v1::RankExit::CAUSE_STOPPED: return "was stopped";
    default: return "ended";
  }
}

bool is_failure(const v1::RankExit& exit) {
  return exit.cause() != v1::RankExit::CAUSE_STOPPED &&
         !(exit.cause() == v1::RankExit::CAUSE_EXITED && exit.exit_code() == 0);
}

// Where SubmitJob's idempotency keys are looked up: per user, so that two users' request
// ids never meet.
std::string request_key(const std::string& owner, const std::string& request_id) { return owner + '\n' + request_id; }

// The filter a page token is bound to: the requested states, sorted.
std::string filter_key(const v1::ListJobsRequest& request) {
  std::vector<int> states(request.states().begin(), request.states().end());
  std::sort(states.begin(), states.end());
  std::string key;
  for (const int state : states) key += std::to_string(state) + ",";
  return key;
}

}  // namespace

struct Coordinator::Impl final : JobFeed {
  // One agent session.
  struct Session {
    StoredSession stored;
    Clock::time_point last_heard;
    // Whether the agent has spoken since this coordinator started: a session loaded from the
    // store gets no ranks until its first heartbeat says which port is free now.
    bool heard = true;
    std::int32_t free_port = 0;
    std::deque<v1::Assignment> outbox;
    std::uint64_t stream_epoch = 0;  // a new stream supersedes the old one
    // What the session's assignment stream waits on (with the coordinator's mutex): only
    // its own outbox, epoch and end wake it, not every change of every job. Shared, so a
    // stream still waiting when the session is erased holds it.
    std::shared_ptr<std::condition_variable> wake = std::make_shared<std::condition_variable>();
  };

  // One job: its durable record, and what lives only in memory.
  struct JobEntry {
    StoredJob stored;
    std::vector<v1::JobEvent> events;  // every change since it was submitted (or loaded)
    LogBuffer logs;
    explicit JobEntry(std::size_t per_stream) : logs(per_stream) {}
    v1::Job& job() { return *stored.record.mutable_job(); }
    const v1::JobSpec& spec() const { return stored.record.job().spec(); }
    std::int32_t world_size() const { return stored.record.agent_ids_size() * spec().nproc_per_node(); }
    // The generation whose ranks were placed last (restart_count runs ahead of it while the
    // job is RESTARTING, and after a cancel or failure there).
    std::int32_t placed_generation() const {
      const auto& record = stored.record;
      return record.assignments_size() > 0 ? record.assignments(0).generation() : record.job().restart_count();
    }
  };

  // Every method authenticates its caller first; those that name a job then check that the
  // caller owns it (or is an admin).
  class JobServiceImpl final : public v1::JobService::Service {
   public:
    explicit JobServiceImpl(Impl& impl) : impl_(impl) {}
    grpc::Status SubmitJob(grpc::ServerContext* context, const v1::SubmitJobRequest* request,
                           v1::SubmitJobResponse* response) override {
      Caller caller;
      if (auto s = impl_.options.authenticator->client(*context, caller); !s.ok()) return s;
      return impl_.submit(caller, *request, *response);
    }
    grpc::Status GetJob(grpc::ServerContext* context, const v1::GetJobRequest* request, v1::Job* response) override {
      Caller caller;
      if (auto s = impl_.authorize(*context, request->job_id(), caller); !s.ok()) return s;
      return impl_.get(request->job_id(), *response);
    }
    grpc::Status ListJobs(grpc::ServerContext* context, const v1::ListJobsRequest* request,
                          v1::ListJobsResponse* response) override {
      Caller caller;
      if (auto s = impl_.options.authenticator->client(*context, caller); !s.ok()) return s;
      return impl_.list(caller, *request, *response);
    }
    grpc::Status CancelJob(grpc::ServerContext* context, const v1::CancelJobRequest* request,
                           v1::Job* response) override {
      Caller caller;
      if (auto s = impl_.authorize(*context, request->job_id(), caller); !s.ok()) return s;
      return impl_.cancel(*request, *response);
    }
    grpc::Status WatchJob(grpc::ServerContext* context, const v1::WatchJobRequest* request,
                          grpc::ServerWriter<v1::JobEvent>* writer) override {
      Caller caller;
      if (auto s = impl_.authorize(*context, request->job_id(), caller); !s.ok()) return s;
      grpc::Status refusal;
      const auto slot = impl_.streams.acquire(caller.user, refusal);
      if (!slot) return refusal;
      return watch_job(impl_, *context, request->job_id(), *writer);
    }
    grpc::Status StreamLogs(grpc::ServerContext* context, const v1::StreamLogsRequest* request,
                            grpc::ServerWriter<v1::LogLine>* writer) override {
      Caller caller;
      if (auto s = impl_.authorize(*context, request->job_id(), caller); !s.ok()) return s;
      grpc::Status refusal;
      const auto slot = impl_.streams.acquire(caller.user, refusal);
      if (!slot) return refusal;
      return launcher::stream_logs(impl_, *context, *request, *writer);
    }

   private:
    Impl& impl_;
  };

  // Every method first checks that its caller is a node of the cluster and, with TLS, that
  // it is the node the session belongs to: a node certificate names one node, so one node
  // can neither register as another nor speak for another's session.
  class AgentServiceImpl final : public v1::AgentService::Service {
   public:
    explicit AgentServiceImpl(Impl& impl) : impl_(impl) {}
    grpc::Status Register(grpc::ServerContext* context, const v1::RegisterRequest* request,
                          v1::RegisterResponse* response) override {
      std::string node;
      if (auto s = impl_.options.authenticator->node(*context, node); !s.ok()) return s;
      if (!node.empty() && node != request->node_name()) {
        return {grpc::StatusCode::PERMISSION_DENIED, "the node certificate of '" + node +
                                                         "' cannot register node '" + request->node_name() +
                                                         "'; run the agent with --node-name " + node};
      }
      return impl_.register_agent(*request, *response);
    }
    grpc::Status Heartbeat(grpc::ServerContext* context, const v1::AgentHeartbeatRequest* request,
                           v1::AgentHeartbeatResponse*) override {
      if (auto s = admit(*context, request->agent_id()); !s.ok()) return s;
      return impl_.agent_heartbeat(*request);
    }
    grpc::Status StreamAssignments(grpc::ServerContext* context, const v1::StreamAssignmentsRequest* request,
                                   grpc::ServerWriter<v1::Assignment>* writer) override {
      if (auto s = admit(*context, request->agent_id()); !s.ok()) return s;
      return impl_.stream_assignments(*context, request->agent_id(), *writer);
    }
    grpc::Status ReportRankExit(grpc::ServerContext* context, const v1::ReportRankExitRequest* request,
                                v1::ReportRankExitResponse*) override {
      if (auto s = admit(*context, request->agent_id()); !s.ok()) return s;
      return impl_.report_rank_exit(*request);
    }
    grpc::Status PushLogs(grpc::ServerContext* context, grpc::ServerReader<v1::PushLogsRequest>* reader,
                          v1::PushLogsResponse*) override {
      std::string node;
      if (auto s = impl_.options.authenticator->node(*context, node); !s.ok()) return s;
      return impl_.push_logs(*reader);
    }

   private:
    grpc::Status admit(const grpc::ServerContext& context, const std::string& agent_id) {
      std::string node;
      if (auto s = impl_.options.authenticator->node(context, node); !s.ok()) return s;
      return node.empty() ? grpc::Status::OK : impl_.session_of_node(agent_id, node);
    }
    Impl& impl_;
  };

  CoordinatorOptions options;
  StreamLimiter streams{options.max_streams_per_user};
  JobServiceImpl job_service{*this};
  AgentServiceImpl agent_service{*this};

  std::mutex mutex;
  std::condition_variable changed;
  bool shutting_down = false;
  std::map<std::string, Session> sessions;            // by agent_id
  std::map<std::string, std::unique_ptr<JobEntry>> jobs;  // by job_id
  std::optional<RankMetrics> metrics;                     // when options.metrics
  ProgressBoard board;                                    // the running jobs' progress
  std::optional<int> collector;
  std::map<std::string, std::string> request_ids;     // request_key(owner, request_id) -> job_id
  std::set<std::string> unwritten;                    // jobs whose last change the store refused
  // Submissions whose write failed with its outcome unknown (etcd may commit a timed-out
  // proposal later), by request key: a retry with the same request_id writes the very same
  // job again, which the store recognises if the first write did commit, instead of a second.
  std::map<std::string, std::unique_ptr<JobEntry>> unconfirmed_submissions;
  std::chrono::steady_clock::time_point last_write_retry;
  bool was_deposed = false;
  std::thread reconciler;

  explicit Impl(CoordinatorOptions coordinator_options) : options(std::move(coordinator_options)) {
    for (StoredSession& stored : options.store->load_sessions()) {
      // A restarted coordinator gives every session it had one heartbeat timeout to speak.
      Session session{.stored = stored, .last_heard = options.clock(), .heard = false};
      sessions.emplace(stored.agent_id, std::move(session));
    }
    for (StoredJob& stored : options.store->load_jobs()) {
      auto entry = std::make_unique<JobEntry>(static_cast<std::size_t>(stored.record.job().spec().log().tail_lines()));
      entry->stored = std::move(stored);
      const std::string id = entry->stored.record.job().job_id();
      const std::string& request_id = entry->stored.record.request_id();
      if (!request_id.empty()) request_ids[request_key(entry->stored.record.job().owner(), request_id)] = id;
      // A job stored before jobs had secrets gets one: its next generation carries it.
      if (entry->stored.record.job_secret().empty()) entry->stored.record.set_job_secret(random_secret());
      entry->events.push_back(event_of(*entry, v1::JOB_STATE_UNSPECIFIED));
      jobs.emplace(id, std::move(entry));
    }
    if (options.metrics) {
      metrics.emplace(*options.metrics);
      collector = options.metrics->add_collector([this](MetricsRegistry::Scrape& scrape) { collect(scrape); });
    }
    reconciler = std::thread([this] { reconcile_loop(); });
  }

  ~Impl() override {
    if (collector) options.metrics->remove_collector(*collector);
    shutdown();
  }

  // At scrape time: jobs by state (every state, zeros included, so that a query for one is
  // never empty) and the agents in session.
  void collect(MetricsRegistry::Scrape& scrape) {
    GaugeFamily& by_state = scrape.gauge("fabricd_jobs", "Jobs the coordinator knows, by state", {"state"});
    GaugeFamily& agents = scrape.gauge("fabricd_agents", "Node agents in session with the coordinator");
    std::lock_guard lock(mutex);
    for (int state = v1::JobState_MIN; state <= v1::JobState_MAX; ++state) {
      if (v1::JobState_IsValid(state) && state != v1::JOB_STATE_UNSPECIFIED) {
        by_state.set({state_name(static_cast<v1::JobState>(state))}, 0);
      }
    }
    for (const auto& [id, entry] : jobs) {
      by_state.add({state_name(entry->job().state())}, 1);
      const v1::Job job = with_progress(*entry);
      if (job.has_progress()) collect_job_progress(scrape, id, job.progress());
    }
    agents.set({}, static_cast<double>(sessions.size()));
  }

  void shutdown() {
    {
      std::lock_guard lock(mutex);
      if (shutting_down) return;
      shutting_down = true;
      for (auto& [agent_id, session] : sessions) session.wake->notify_all();
    }
    changed.notify_all();
    if (reconciler.joinable()) reconciler.join();
  }

  // --- Durable changes (mutex held) -------------------------------------------------

  // Writes the job through; returns why not when the store refused. A store that cannot
  // take writes now (etcd without a quorum) leaves the change in memory, and the reconciler
  // writes it again at every tick until the store takes it. A conflict means another
  // coordinator wrote the job: this one leads no more.
  // A submission not yet accepted (`retry_later` false) is refused instead, and forgotten.
  std::optional<std::string> persist(JobEntry& entry, bool retry_later = true) {
    const std::string& job_id = entry.stored.record.job().job_id();
    try {
      options.store->put_job(entry.stored);
      if (unwritten.erase(job_id) > 0) std::cerr << "fabricd serve: job " << job_id << " written to the store again" << std::endl;
      return std::nullopt;
    } catch (const JobStoreConflict& error) {
      deposed(error.what());
      return error.what();
    } catch (const JobStoreError& error) {
      if (retry_later && unwritten.insert(job_id).second) {
        std::cerr << "fabricd serve: " << error.what() << " (job " << job_id << " kept in memory, written again when the store takes writes)" << std::endl;
      }
      return error.what();
    }
  }

  void deposed(const std::string& why) {
    if (std::exchange(was_deposed, true)) return;
    std::cerr << "fabricd serve: another coordinator wrote to the job store: " << why << std::endl;
    if (options.on_deposed) options.on_deposed(why);
  }

  void write_unwritten() {
    const std::set<std::string> pending = unwritten;
    for (const std::string& job_id : pending) {
      if (const auto entry = jobs.find(job_id); entry != jobs.end()) {
        if (persist(*entry->second)) return;  // still refused: the rest would be too
      } else {
        unwritten.erase(job_id);
      }
    }
  }

  v1::JobEvent event_of(JobEntry& entry, v1::JobState previous) {
    v1::JobEvent event;
    *event.mutable_job() = entry.job();
    event.set_previous_state(previous);
    *event.mutable_time() = now_timestamp();
    return event;
  }

  // A change other than of the state (restart_count, failure, message): recorded, sent.
  void changed_job(JobEntry& entry) {
    persist(entry);
    entry.events.push_back(event_of(entry, entry.job().state()));
    changed.notify_all();
  }

  bool transition(JobEntry& entry, v1::JobState to, const std::string& message) {
    v1::Job& job = entry.job();
    const v1::JobState from = job.state();
    if (!can_transition(from, to)) {
      std::cerr << "fabricd serve: refused an illegal transition of job " << job.job_id() << " from "
                << state_name(from) << " to " << state_name(to) << std::endl;
      return false;
    }
    job.set_state(to);
    job.set_message(message);
    if (to == v1::JOB_STATE_RUNNING && !job.has_start_time()) *job.mutable_start_time() = now_timestamp();
    if (is_terminal(to)) *job.mutable_end_time() = now_timestamp();
    if (is_terminal(to)) board.forget(job.job_id());
    persist(entry);
    entry.events.push_back(event_of(entry, from));
    changed.notify_all();
    return true;
  }

  void send(const std::string& agent_id, v1::Assignment assignment) {
    const auto session = sessions.find(agent_id);
    if (session == sessions.end()) return;
    session->second.outbox.push_back(std::move(assignment));
    session->second.wake->notify_all();
  }

  // The StopJob for ranks of `generation` that should not run: a restart's (the job keeps
  // its rendezvous) or an end's.
  v1::Assignment stop_assignment(JobEntry* entry, const std::string& job_id, std::int32_t generation) {
    v1::Assignment assignment;
    auto& stop = *assignment.mutable_stop();
    stop.set_job_id(job_id);
    stop.set_generation(generation);
    if (!entry) return assignment;
    set_duration(stop.mutable_grace_period(), grace_period(entry->spec()));
    const v1::JobState state = entry->job().state();
    stop.set_reason(state == v1::JOB_STATE_RESTARTING  ? v1::StopJob::REASON_RESTART
                    : state == v1::JOB_STATE_CANCELLED ? v1::StopJob::REASON_CANCELLED
                    : state == v1::JOB_STATE_FAILED    ? v1::StopJob::REASON_FAILED
                                                       : v1::StopJob::REASON_UNSPECIFIED);
    return assignment;
  }

  void stop_on_nodes(JobEntry& entry, v1::StopJob::Reason reason, milliseconds grace) {
    for (const std::string& agent_id : entry.stored.record.agent_ids()) {
      v1::Assignment assignment;
      auto& stop = *assignment.mutable_stop();
      stop.set_job_id(entry.job().job_id());
      stop.set_generation(entry.job().restart_count());
      set_duration(stop.mutable_grace_period(), grace);
      stop.set_reason(reason);
      send(agent_id, std::move(assignment));
    }
  }

  // --- Scheduling (mutex held) ------------------------------------------------------

  // Ranks of node `node_rank` of the job's current generation that have not ended.
  std::int32_t live_ranks_on(const JobEntry& entry, int node_rank) const {
    const std::int32_t nproc = entry.spec().nproc_per_node();
    std::int32_t live = nproc;
    for (const auto& exit : entry.stored.record.exits()) {
      if (exit.rank() / nproc == node_rank) --live;
    }
    return live;
  }

  std::vector<NodeCapacity> capacities() const {
    std::vector<NodeCapacity> nodes;
    for (const auto& [agent_id, session] : sessions) {
      if (!session.heard) continue;
      NodeCapacity node{.agent_id = agent_id, .node_name = session.stored.node_name, .slots = session.stored.slots};
      for (const auto& [job_id, entry] : jobs) {
        const auto& agents = entry->stored.record.agent_ids();
        for (int node_rank = 0; node_rank < agents.size(); ++node_rank) {
          if (agents[node_rank] == agent_id) node.used += live_ranks_on(*entry, node_rank);
        }
      }
      nodes.push_back(std::move(node));
    }
    return nodes;
  }

  bool all_ranks_ended(const JobEntry& entry) const {
    return entry.stored.record.exits_size() >= entry.world_size();
  }

  // Starts the job's next generation, or says why not: a PENDING job's message changes, a
  // RESTARTING one goes back to PENDING with the reason.
  void try_start(JobEntry& entry) {
    const v1::JobSpec& spec = entry.spec();
    std::string why_not;
    const auto placement = place({.nproc_per_node = spec.nproc_per_node(),
                                  .min_nodes = spec.min_nodes(),
                                  .max_nodes = spec.num_nodes()},
                                 capacities(), why_not);
    if (placement) {
      start_generation(entry, *placement);
    } else if (entry.job().state() == v1::JOB_STATE_RESTARTING) {
      transition(entry, v1::JOB_STATE_PENDING, why_not);
    } else if (entry.job().message() != why_not) {
      entry.job().set_message(why_not);
      changed_job(entry);
    }
  }

  void start_generation(JobEntry& entry, const Placement& placement) {
    v1::JobRecord& record = entry.stored.record;
    v1::Job& job = entry.job();
    const v1::JobSpec& spec = job.spec();
    const std::int32_t generation = job.restart_count();
    const std::int32_t num_nodes = static_cast<std::int32_t>(placement.agent_ids.size());
    const Session& first = sessions.at(placement.agent_ids.front());
    record.clear_agent_ids();
    record.clear_exits();
    record.clear_assignments();
    job.clear_nodes();
    for (std::int32_t node_rank = 0; node_rank < num_nodes; ++node_rank) {
      const std::string& agent_id = placement.agent_ids[static_cast<std::size_t>(node_rank)];
      record.add_agent_ids(agent_id);
      job.add_nodes(sessions.at(agent_id).stored.node_name);
      const Environment env = node_environment({.job_id = job.job_id(),
                                                .generation = generation,
                                                .max_restarts = spec.max_restarts(),
                                                .node_rank = node_rank,
                                                .num_nodes = num_nodes,
                                                .nproc_per_node = spec.nproc_per_node(),
                                                .master_addr = host_of(first.stored.address),
                                                .master_port = first.free_port,
                                                .store_endpoint = first.stored.address},
                                               Environment(spec.env().begin(), spec.env().end()));
      v1::StartRanks& start = *record.add_assignments();
      start.set_job_id(job.job_id());
      start.set_generation(generation);
      start.set_job_secret(record.job_secret());
      *start.mutable_spec() = spec;
      for (std::int32_t local = 0; local < spec.nproc_per_node(); ++local) {
        start.add_ranks(node_rank * spec.nproc_per_node() + local);
      }
      start.set_node_rank(node_rank);
      start.set_world_size(num_nodes * spec.nproc_per_node());
      start.mutable_env()->insert(env.begin(), env.end());
      v1::Assignment assignment;
      *assignment.mutable_start() = start;
      send(agent_id, std::move(assignment));
    }
    transition(entry, v1::JOB_STATE_RUNNING,
               "running generation " + std::to_string(generation) + " on " + std::to_string(num_nodes) +
                   (num_nodes == 1 ? " node" : " nodes") + " (" + std::to_string(num_nodes * spec.nproc_per_node()) +
                   (num_nodes * spec.nproc_per_node() == 1 ? " rank)" : " ranks)"));
  }

  // A rank of the current generation failed while the job ran: restart or fail.
  void handle_failure(JobEntry& entry, const v1::RankExit& exit) {
    v1::Job& job = entry.job();
    const std::int32_t node_rank = exit.rank() / entry.spec().nproc_per_node();
    v1::FailureSummary& failure = *job.mutable_failure();
    failure.Clear();
    failure.set_generation(exit.generation());
    if (node_rank < job.nodes_size()) failure.set_node(job.nodes(node_rank));
    failure.set_node_rank(node_rank);
    *failure.mutable_first_failure() = exit;
    std::string message = "rank " + std::to_string(exit.rank()) + (failure.node().empty() ? "" : " on " + failure.node()) +
                          " " + describe_exit(exit);
    if (!exit.reported_error().message().empty()) {
      message += ": " + exit.reported_error().error_type() + ": " + exit.reported_error().message().substr(0, 500);
    }
    failure.set_message(message);
    *job.add_failures() = failure;
    if (job.failures_size() > kKeptFailures) job.mutable_failures()->DeleteSubrange(0, 1);
    if (job.restart_count() < entry.spec().max_restarts()) {
      if (metrics) metrics->restarts.add({exit_cause(exit)});
      stop_on_nodes(entry, v1::StopJob::REASON_RESTART, grace_period(entry.spec()));
      job.set_restart_count(job.restart_count() + 1);
      transition(entry, v1::JOB_STATE_RESTARTING, "restarting after " + message);
    } else {
      stop_on_nodes(entry, v1::StopJob::REASON_FAILED, grace_period(entry.spec()));
      transition(entry, v1::JOB_STATE_FAILED, message);
    }
  }

  void on_rank_exit(JobEntry& entry, const v1::RankExit& exit) {
    v1::JobRecord& record = entry.stored.record;
    // Only the generation placed now counts; a late report of an older one changes nothing.
    const std::int32_t current = entry.placed_generation();
    if (exit.generation() != current || exit.rank() < 0 || exit.rank() >= entry.world_size()) return;
    for (const auto& known : record.exits()) {
      if (known.rank() == exit.rank()) return;  // idempotent
    }
    *record.add_exits() = exit;
    if (metrics) metrics->rank_exits.add({exit_cause(exit)});
    persist(entry);
    changed.notify_all();
    if (entry.job().state() != v1::JOB_STATE_RUNNING) return;
    if (is_failure(exit)) {
      handle_failure(entry, exit);
    } else if (all_ranks_ended(entry)) {
      stop_on_nodes(entry, v1::StopJob::REASON_UNSPECIFIED, milliseconds(0));
      transition(entry, v1::JOB_STATE_SUCCEEDED, "every rank of generation " + std::to_string(current) + " exited 0");
    }
  }

  // The session is over: its ranks are lost, its slots gone. `agent_id` is a copy: callers
  // pass the key of the session's own map entry, which the erase below frees.
  void lose_session(const std::string agent_id, const std::string& why) {
    const auto session = sessions.find(agent_id);
    if (session == sessions.end()) return;
    std::cerr << "fabricd serve: node " << session->second.stored.node_name << " lost: " << why << std::endl;
    for (auto& [job_id, entry] : jobs) {
      const auto& agents = entry->stored.record.agent_ids();
      for (int node_rank = 0; node_rank < agents.size(); ++node_rank) {
        if (agents[node_rank] != agent_id) continue;
        const std::int32_t nproc = entry->spec().nproc_per_node();
        const std::int32_t generation = entry->placed_generation();
        for (std::int32_t local = 0; local < nproc; ++local) {
          v1::RankExit exit;
          exit.set_rank(node_rank * nproc + local);
          exit.set_local_rank(local);
          exit.set_generation(generation);
          exit.set_cause(v1::RankExit::CAUSE_NODE_LOST);
          *exit.mutable_time() = now_timestamp();
          on_rank_exit(*entry, exit);
        }
      }
    }
    session->second.wake->notify_all();
    sessions.erase(session);
    try {
      options.store->delete_session(agent_id);
    } catch (const JobStoreError& error) {
      std::cerr << "fabricd serve: " << error.what() << std::endl;
    }
    changed.notify_all();
  }

  void reconcile() {
    const auto now = options.clock();
    std::vector<std::string> silent;
    for (const auto& [agent_id, session] : sessions) {
      if (now - session.last_heard > options.agent_heartbeat_timeout) silent.push_back(agent_id);
    }
    for (const auto& agent_id : silent) {
      lose_session(agent_id, "no heartbeat for " + std::to_string(options.agent_heartbeat_timeout.count()) + " ms");
    }
    std::vector<JobEntry*> waiting;  // oldest first, so that placement is first come, first served
    for (auto& [job_id, entry] : jobs) {
      const v1::JobState state = entry->job().state();
      if (state == v1::JOB_STATE_PENDING || (state == v1::JOB_STATE_RESTARTING && all_ranks_ended(*entry))) {
        waiting.push_back(entry.get());
      }
    }
    std::sort(waiting.begin(), waiting.end(),
              [](const JobEntry* a, const JobEntry* b) { return a->stored.sequence < b->stored.sequence; });
    for (JobEntry* entry : waiting) try_start(*entry);
    forget_old_jobs();
    // Last, and once a second: a store that refuses writes may take seconds to say so, and
    // the heartbeats waiting on the mutex must be heard before the next silence check.
    if (!unwritten.empty() && now - last_write_retry >= std::chrono::seconds(1)) {
      last_write_retry = now;
      write_unwritten();
    }
  }

  void forget_old_jobs() {
    std::vector<std::pair<std::int64_t, std::string>> finished;
    for (const auto& [job_id, entry] : jobs) {
      if (is_terminal(entry->job().state()) && all_ranks_ended(*entry)) {
        finished.emplace_back(entry->stored.sequence, job_id);
      }
    }
    if (finished.size() <= options.finished_jobs_kept) return;
    std::sort(finished.begin(), finished.end());
    for (std::size_t i = 0; i < finished.size() - options.finished_jobs_kept; ++i) {
      const std::string& job_id = finished[i].second;
      const v1::JobRecord& record = jobs.at(job_id)->stored.record;
      request_ids.erase(request_key(record.job().owner(), record.request_id()));
      jobs.erase(job_id);
      try {
        options.store->delete_job(job_id);
      } catch (const JobStoreError& error) {
        std::cerr << "fabricd serve: " << error.what() << std::endl;
      }
    }
  }

  void reconcile_loop() {
    std::unique_lock lock(mutex);
    while (!shutting_down) {
      reconcile();
      changed.wait_for(lock, options.tick);
    }
  }

  // --- JobService -------------------------------------------------------------------

  JobEntry* find(const std::string& job_id) {
    const auto it = jobs.find(job_id);
    return it == jobs.end() ? nullptr : it->second.get();
  }

  // PERMISSION_DENIED when job_id names a job of another user and the caller is no admin;
  // OK for the owner, an admin, or a job that does not exist (the method answers NOT_FOUND).
  grpc::Status authorize(const grpc::ServerContext& context, const std::string& job_id, Caller& caller) {
    if (auto s = options.authenticator->client(context, caller); !s.ok()) return s;
    std::lock_guard lock(mutex);
    const JobEntry* entry = find(job_id);
    if (entry == nullptr || caller.admin || entry->stored.record.job().owner() == caller.user) {
      return grpc::Status::OK;
    }
    return {grpc::StatusCode::PERMISSION_DENIED,
            "job " + job_id + " belongs to another user; '" + caller.user + "' may only see and cancel their own jobs"};
  }

  // A PENDING job for the request, not yet written.
  std::unique_ptr<JobEntry> new_job(const Caller& caller, const v1::SubmitJobRequest& request, const v1::JobSpec& spec) {
    auto entry = std::make_unique<JobEntry>(static_cast<std::size_t>(spec.log().tail_lines()));
    v1::Job& job = entry->job();
    job.set_job_id(new_job_id(spec.name()));
    *job.mutable_spec() = spec;
    job.set_state(v1::JOB_STATE_PENDING);
    job.set_message("waiting to be placed");
    job.set_owner(caller.user);
    *job.mutable_create_time() = now_timestamp();
    entry->stored.record.set_request_id(request.request_id());
    entry->stored.record.set_job_secret(random_secret());
    return entry;
  }

  grpc::Status submit(const Caller& caller, const v1::SubmitJobRequest& request, v1::SubmitJobResponse& response) {
    if (const std::string problem = validate(request.spec()); !problem.empty()) {
      return {grpc::StatusCode::INVALID_ARGUMENT, problem};
    }
    const v1::JobSpec spec = with_defaults(request.spec());
    std::lock_guard lock(mutex);
    if (shutting_down) return {grpc::StatusCode::UNAVAILABLE, "the coordinator is shutting down"};
    const std::string idempotency_key = request_key(caller.user, request.request_id());
    if (!request.request_id().empty()) {
      if (const auto known = request_ids.find(idempotency_key); known != request_ids.end()) {
        JobEntry& entry = *jobs.at(known->second);
        if (!google::protobuf::util::MessageDifferencer::Equals(entry.spec(), spec)) {
          return {grpc::StatusCode::ALREADY_EXISTS,
                  "request_id '" + request.request_id() + "' was used for job " + known->second +
                      " with a different spec; use a new request_id for a new job"};
        }
        *response.mutable_job() = entry.job();
        return grpc::Status::OK;
      }
    }
    const std::size_t unfinished = static_cast<std::size_t>(std::count_if(
        jobs.begin(), jobs.end(), [](const auto& job) { return !is_terminal(job.second->job().state()); }));
    if (unfinished >= options.max_unfinished_jobs) {
      return {grpc::StatusCode::RESOURCE_EXHAUSTED,
              "the coordinator already keeps " + std::to_string(unfinished) + " unfinished jobs (its limit); retry "
              "once some have ended"};
    }
    const std::size_t pending = static_cast<std::size_t>(std::count_if(jobs.begin(), jobs.end(), [&](const auto& job) {
      return job.second->job().state() == v1::JOB_STATE_PENDING && job.second->job().owner() == caller.user;
    }));
    if (pending >= options.max_pending_jobs_per_user) {
      return {grpc::StatusCode::RESOURCE_EXHAUSTED,
              "'" + caller.user + "' already has " + std::to_string(pending) +
                  " jobs waiting to be placed, the limit of pending jobs per user (" +
                  std::to_string(options.max_pending_jobs_per_user) + "); cancel some or wait until they start"};
    }
    std::unique_ptr<JobEntry> entry;
    if (const auto unconfirmed = unconfirmed_submissions.find(idempotency_key);
        unconfirmed != unconfirmed_submissions.end()) {
      if (!google::protobuf::util::MessageDifferencer::Equals(unconfirmed->second->spec(), spec)) {
        return {grpc::StatusCode::ALREADY_EXISTS, "request_id '" + request.request_id() +
                                                      "' was used for a submission that may have been stored, with "
                                                      "a different spec; use a new request_id for a new job"};
      }
      entry = std::move(unconfirmed->second);  // the very job an earlier try wrote, unanswered
      unconfirmed_submissions.erase(unconfirmed);
    } else {
      entry = new_job(caller, request, spec);
    }
    v1::Job& job = entry->job();
    if (const auto refused = persist(*entry, /*retry_later=*/false)) {
      if (!request.request_id().empty() && !was_deposed) unconfirmed_submissions[idempotency_key] = std::move(entry);
      // Its write may still commit (etcd commits a timed-out proposal once it can): say
      // which job that would be.
      return {grpc::StatusCode::UNAVAILABLE, "the job (" + job.job_id() + ") was not accepted: " + *refused +
                                                 "; the store may still take that write late: retry with the same "
                                                 "request_id, which never makes two jobs"};
    }
    entry->events.push_back(event_of(*entry, v1::JOB_STATE_UNSPECIFIED));
    if (!request.request_id().empty()) request_ids[idempotency_key] = job.job_id();
    *response.mutable_job() = job;
    jobs.emplace(job.job_id(), std::move(entry));
    changed.notify_all();  // the reconciler places it now, not at its next tick
    return grpc::Status::OK;
  }

  grpc::Status get(const std::string& job_id, v1::Job& response) {
    std::lock_guard lock(mutex);
    JobEntry* entry = find(job_id);
    if (!entry) return job_not_found(job_id);
    response = with_progress(*entry);
    return grpc::Status::OK;
  }

  grpc::Status list(const Caller& caller, const v1::ListJobsRequest& request, v1::ListJobsResponse& response) {
    const std::string filter = filter_key(request);
    std::int64_t before = std::numeric_limits<std::int64_t>::max();
    if (!request.page_token().empty()) {
      const auto bar = request.page_token().rfind('|');
      if (bar == std::string::npos || request.page_token().substr(0, bar) != filter) {
        return {grpc::StatusCode::INVALID_ARGUMENT,
                "page_token does not come from a previous ListJobs with the same states filter; start again "
                "without a page_token"};
      }
      try {
        before = std::stoll(request.page_token().substr(bar + 1));
      } catch (const std::exception&) {
        return {grpc::StatusCode::INVALID_ARGUMENT, "page_token is malformed; start again without one"};
      }
    }
    const int page_size = request.page_size() <= 0 ? 100 : std::min(request.page_size(), 1000);
    const std::set<int> states(request.states().begin(), request.states().end());
    std::lock_guard lock(mutex);
    std::vector<JobEntry*> matching;
    for (auto& [job_id, entry] : jobs) {
      const bool visible = caller.admin || entry->job().owner() == caller.user;
      if (visible && entry->stored.sequence < before && (states.empty() || states.contains(entry->job().state()))) {
        matching.push_back(entry.get());
      }
    }
    std::sort(matching.begin(), matching.end(),
              [](const JobEntry* a, const JobEntry* b) { return a->stored.sequence > b->stored.sequence; });
    for (std::size_t i = 0; i < matching.size() && static_cast<int>(i) < page_size; ++i) {
      *response.add_jobs() = with_progress(*matching[i]);
    }
    if (static_cast<int>(matching.size()) > page_size) {
      response.set_next_page_token(filter + "|" + std::to_string(matching[static_cast<std::size_t>(page_size) - 1]->stored.sequence));
    }
    return grpc::Status::OK;
  }

  grpc::Status cancel(const v1::CancelJobRequest& request, v1::Job& response) {
    std::lock_guard lock(mutex);
    JobEntry* entry = find(request.job_id());
    if (!entry) return job_not_found(request.job_id());
    const v1::JobState state = entry->job().state();
    if (state == v1::JOB_STATE_SUCCEEDED || state == v1::JOB_STATE_FAILED) {
      return {grpc::StatusCode::FAILED_PRECONDITION,
              "job " + request.job_id() + " already ended as " + state_name(state) + "; its outcome is not rewritten"};
    }
    if (state != v1::JOB_STATE_CANCELLED) {
      const milliseconds grace = request.has_grace_period() ? to_milliseconds(request.grace_period())
                                                            : grace_period(entry->spec());
      stop_on_nodes(*entry, v1::StopJob::REASON_CANCELLED, grace);
      transition(*entry, v1::JOB_STATE_CANCELLED,
                 "cancelled" + (request.reason().empty() ? std::string() : ": " + request.reason()));
    }
    response = entry->job();
    return grpc::Status::OK;
  }

  // --- JobFeed (WatchJob, StreamLogs) ---------------------------------------------

  std::mutex& feed_mutex() override { return mutex; }
  std::condition_variable& feed_changed() override { return changed; }
  bool feed_closed() const override { return shutting_down; }
  std::optional<View> view(const std::string& job_id) override {
    JobEntry* entry = find(job_id);
    if (!entry) return std::nullopt;
    return View{.events = &entry->events,
                .logs = &entry->logs,
                .finished = is_terminal(entry->job().state()) && all_ranks_ended(*entry)};
  }

  // --- AgentService -----------------------------------------------------------------

  // PERMISSION_DENIED when agent_id is a session of another node than `node`.
  grpc::Status session_of_node(const std::string& agent_id, const std::string& node) {
    std::lock_guard lock(mutex);
    const auto it = sessions.find(agent_id);
    if (it == sessions.end() || it->second.stored.node_name == node) return grpc::Status::OK;
    return {grpc::StatusCode::PERMISSION_DENIED,
            "session " + agent_id + " belongs to node '" + it->second.stored.node_name + "', not to '" + node + "'"};
  }

  grpc::Status register_agent(const v1::RegisterRequest& request, v1::RegisterResponse& response) {
    if (request.node_name().empty()) return {grpc::StatusCode::INVALID_ARGUMENT, "node_name is empty; name the node"};
    if (request.slots() < 1) {
      return {grpc::StatusCode::INVALID_ARGUMENT,
              "slots is " + std::to_string(request.slots()) + "; a node runs at least one rank"};
    }
    const auto colon = request.address().rfind(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == request.address().size()) {
      return {grpc::StatusCode::INVALID_ARGUMENT,
              "address '" + request.address() + "' is not host:port (the agent's RendezvousService)"};
    }
    std::lock_guard lock(mutex);
    for (const auto& [agent_id, session] : sessions) {
      if (session.stored.node_name == request.node_name()) {
        lose_session(agent_id, "it registered again (the agent restarted)");
        break;
      }
    }
    Session session{.stored = {.agent_id = "agent-" + request.node_name() + "-" + random_hex(8),
                               .node_name = request.node_name(),
                               .address = request.address(),
                               .slots = request.slots()},
                    .last_heard = options.clock(),
                    .free_port = request.free_port()};
    try {
      options.store->put_session(session.stored);
    } catch (const JobStoreError& error) {
      return {grpc::StatusCode::UNAVAILABLE, error.what()};
    }
    response.set_agent_id(session.stored.agent_id);
    set_duration(response.mutable_heartbeat_interval(), options.agent_heartbeat_interval);
    set_duration(response.mutable_heartbeat_timeout(), options.agent_heartbeat_timeout);
    std::cerr << "fabricd serve: node " << request.node_name() << " registered (" << request.slots() << " slots, "
              << request.address() << ")" << std::endl;
    sessions.emplace(session.stored.agent_id, std::move(session));
    changed.notify_all();
    return grpc::Status::OK;
  }

  // The rank reports of a node running the job's current generation; names a straggler
  // across all its nodes when one appears.
  void record_progress(JobEntry& entry, const v1::RunningRanks& running, const std::string& node) {
    const auto now = options.clock();
    for (const v1::RankReport& report : running.reports()) {
      const std::int32_t rank = report.progress().rank();
      if (rank < 0 || rank >= entry.world_size()) continue;  // not a rank of this job
      board.record(running.job_id(), running.generation(), node, report, now);
    }
    if (auto straggler = board.check_stragglers(running.job_id(), entry.world_size(), now)) {
      std::cerr << "fabricd serve: job " << running.job_id() << " straggler: " << *straggler << std::endl;
      if (metrics) metrics->straggler_warnings.add({});
    }
  }

  // The job as clients see it: with its progress while it runs.
  v1::Job with_progress(JobEntry& entry) {
    v1::Job job = entry.job();
    if (job.state() != v1::JOB_STATE_RUNNING) return job;
    if (auto progress = board.progress(job.job_id(), entry.placed_generation(), options.clock(),
                                       std::chrono::system_clock::now())) {
      *job.mutable_progress() = std::move(*progress);
    }
    return job;
  }

  // The nodes in session, with the caller's jobs that run there.
  std::vector<NodeStatus> nodes(const Caller& caller) {
    std::lock_guard lock(mutex);
    std::vector<NodeStatus> nodes;
    const auto now = options.clock();
    for (const NodeCapacity& capacity : capacities()) {
      const Session& session = sessions.at(capacity.agent_id);
      NodeStatus node{.name = capacity.node_name,
                      .address = session.stored.address,
                      .slots = capacity.slots,
                      .used_slots = capacity.used,
                      .heartbeat_age_seconds = std::chrono::duration<double>(now - session.last_heard).count()};
      for (const auto& [job_id, entry] : jobs) {
        const bool visible = caller.admin || entry->job().owner() == caller.user;
        const auto& agents = entry->stored.record.agent_ids();
        if (visible && !is_terminal(entry->job().state()) &&
            std::find(agents.begin(), agents.end(), capacity.agent_id) != agents.end()) {
          node.jobs.push_back(job_id);
        }
      }
      nodes.push_back(std::move(node));
    }
    return nodes;
  }

  grpc::Status agent_heartbeat(const v1::AgentHeartbeatRequest& request) {
    std::lock_guard lock(mutex);
    const auto session = sessions.find(request.agent_id());
    if (session == sessions.end()) return session_ended(request.agent_id());
    session->second.last_heard = options.clock();
    session->second.heard = true;
    if (request.free_port() > 0) session->second.free_port = request.free_port();
    // Ranks the agent runs that nobody expects any more (a stop lost with a stream, or with
    // a restart of the coordinator) are stopped again. A stop the agent already carries out
    // is a no-op there, so repeating it is harmless.
    for (const auto& running : request.running()) {
      JobEntry* entry = find(running.job_id());
      if (entry && entry->job().state() == v1::JOB_STATE_RUNNING && running.generation() == entry->placed_generation()) {
        record_progress(*entry, running, session->second.stored.node_name);
        continue;
      }
      send(request.agent_id(), stop_assignment(entry, running.job_id(), running.generation()));
    }
    return grpc::Status::OK;
  }

  grpc::Status stream_assignments(grpc::ServerContext& context, const std::string& agent_id,
                                  grpc::ServerWriter<v1::Assignment>& writer) {
    std::unique_lock lock(mutex);
    auto it = sessions.find(agent_id);
    if (it == sessions.end()) return session_ended(agent_id);
    const std::uint64_t epoch = ++it->second.stream_epoch;
    const std::shared_ptr<std::condition_variable> wake = it->second.wake;
    wake->notify_all();  // an older stream of this session ends
    // What the agent should be running, again (StartRanks it already runs are no-ops), and
    // the stops of what it should not: whatever the old stream left unsent is covered.
    it->second.outbox.clear();
    for (auto& [job_id, entry] : jobs) {
      const auto& record = entry->stored.record;
      for (int node_rank = 0; node_rank < record.agent_ids_size(); ++node_rank) {
        if (record.agent_ids(node_rank) != agent_id || live_ranks_on(*entry, node_rank) == 0) continue;
        if (entry->job().state() == v1::JOB_STATE_RUNNING && node_rank < record.assignments_size()) {
          v1::Assignment assignment;
          *assignment.mutable_start() = record.assignments(node_rank);
          it->second.outbox.push_back(std::move(assignment));
        } else {
          it->second.outbox.push_back(stop_assignment(entry.get(), job_id, entry->placed_generation()));
        }
      }
    }
    for (;;) {
      wake->wait_for(lock, kStreamPoll, [&] {
        it = sessions.find(agent_id);
        return shutting_down || it == sessions.end() || it->second.stream_epoch != epoch || !it->second.outbox.empty();
      });
      if (context.IsCancelled()) return grpc::Status::CANCELLED;
      if (shutting_down) return {grpc::StatusCode::UNAVAILABLE, "the coordinator is shutting down; reconnect"};
      if (it == sessions.end()) return session_ended(agent_id);
      if (it->second.stream_epoch != epoch) return {grpc::StatusCode::ABORTED, "a newer assignment stream replaced this one"};
      while (!it->second.outbox.empty()) {
        v1::Assignment assignment = std::move(it->second.outbox.front());
        it->second.outbox.pop_front();
        lock.unlock();
        const bool written = writer.Write(assignment);
        lock.lock();
        // Unwritten assignments are not lost for good: the next stream resends what should
        // run, and heartbeats catch ranks that should have been stopped.
        if (!written) return grpc::Status::CANCELLED;
        it = sessions.find(agent_id);
        if (it == sessions.end()) return session_ended(agent_id);
      }
    }
  }

  grpc::Status report_rank_exit(const v1::ReportRankExitRequest& request) {
    std::lock_guard lock(mutex);
    const auto session = sessions.find(request.agent_id());
    if (session == sessions.end()) return session_ended(request.agent_id());
    session->second.last_heard = options.clock();
    JobEntry* entry = find(request.job_id());
    if (!entry) return job_not_found(request.job_id());
    on_rank_exit(*entry, request.exit());
    return grpc::Status::OK;
  }

  grpc::Status push_logs(grpc::ServerReader<v1::PushLogsRequest>& reader) {
    v1::PushLogsRequest batch;
    while (reader.Read(&batch)) {
      std::lock_guard lock(mutex);
      if (!sessions.contains(batch.agent_id())) return session_ended(batch.agent_id());
      for (auto& line : *batch.mutable_lines()) {
        if (JobEntry* entry = find(line.job_id())) entry->logs.append(std::move(line));
      }
      changed.notify_all();
    }
    return grpc::Status::OK;
  }
};

Coordinator::Coordinator(CoordinatorOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}
Coordinator::~Coordinator() = default;

v1::JobService::Service& Coordinator::job_service() { return impl_->job_service; }

StatusSnapshot Coordinator::status(const Caller& caller) {
  v1::ListJobsResponse listed;
  StatusSnapshot snapshot;
  impl_->list(caller, {}, listed);
  for (v1::Job& job : *listed.mutable_jobs()) snapshot.jobs.push_back(std::move(job));
  snapshot.nodes = impl_->nodes(caller);
  return snapshot;
}
v1::AgentService::Service& Coordinator::agent_service() { return impl_->agent_service; }
void Coordinator::shutdown() { impl_->shutdown(); }

}  // namespace fabric::launcher
