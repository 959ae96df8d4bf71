#include "agent/agent.h"

#include <google/protobuf/util/time_util.h>
#include <grpcpp/grpcpp.h>
#include <signal.h>

#include <condition_variable>
#include <deque>
#include <filesystem>
#include <future>
#include <iostream>
#include <list>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "fabric/v1/agent.grpc.pb.h"
#include "jobs/job_spec.h"
#include "leader/leader_channel.h"
#include "ranks/health_watch.h"
#include "ranks/job_progress.h"
#include "ranks/output_router.h"
#include "ranks/ports.h"
#include "ranks/rank_environment.h"
#include "ranks/rank_group.h"
#include "ranks/zygote.h"
#include "ranks/rank_metrics.h"
#include "ranks/straggler_watch.h"
#include "rendezvous/rendezvous_server.h"

namespace fabric::launcher {

namespace v1 = fabric::v1;
using Clock = std::chrono::steady_clock;
using google::protobuf::util::TimeUtil;
using std::chrono::milliseconds;

namespace {

constexpr const char* kAgentVersion = "fabric.v1";
// How often the agent looks for hung ranks: the slack on top of heartbeat_timeout.
constexpr milliseconds kWatchInterval{100};
// A rank of another node may reach this node's store before its StartRanks arrives here.
constexpr milliseconds kAwaitUnstarted = std::chrono::seconds(60);
// Output lines waiting to be pushed; beyond this the oldest are dropped (agent.proto).
constexpr std::size_t kMaxQueuedLines = 100000;
constexpr int kLinesPerBatch = 500;

// Lines of the ranks of every job, waiting for the coordinator.
class LogQueue {
 public:
  void push(v1::LogLine line) {
    std::lock_guard lock(mutex_);
    lines_.push_back(std::move(line));
    if (lines_.size() > kMaxQueuedLines) lines_.pop_front();
    ready_.notify_one();
  }
  // Up to kLinesPerBatch lines, waiting up to `wait` for the first.
  std::vector<v1::LogLine> take(milliseconds wait) {
    std::unique_lock lock(mutex_);
    ready_.wait_for(lock, wait, [&] { return !lines_.empty(); });
    std::vector<v1::LogLine> batch;
    while (!lines_.empty() && static_cast<int>(batch.size()) < kLinesPerBatch) {
      batch.push_back(std::move(lines_.front()));
      lines_.pop_front();
    }
    return batch;
  }
  void clear() {
    std::lock_guard lock(mutex_);
    lines_.clear();
  }

 private:
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<v1::LogLine> lines_;
};

// Turns a rank's output lines into LogLines for the coordinator.
class PushSink final : public LineSink {
 public:
  PushSink(LogQueue& queue, std::string job_id, std::string node) : queue_(queue), job_id_(std::move(job_id)), node_(std::move(node)) {}
  void write(const OutputLine& line) override {
    v1::LogLine out;
    out.set_job_id(job_id_);
    out.set_generation(line.generation);
    out.set_rank(line.rank);
    out.set_local_rank(line.local_rank);
    out.set_node(node_);
    out.set_stream(line.is_stderr ? v1::LOG_STREAM_STDERR : v1::LOG_STREAM_STDOUT);
    out.set_text(line.text);
    *out.mutable_time() = TimeUtil::GetCurrentTime();
    queue_.push(std::move(out));
  }

 private:
  LogQueue& queue_;
  const std::string job_id_, node_;
};

grpc::ClientContext* with_deadline(grpc::ClientContext& context, milliseconds timeout) {
  context.set_deadline(std::chrono::system_clock::now() + timeout);
  return &context;
}

}  // namespace

struct Agent::Impl {
  // One generation of one job on this node.
  struct NodeRun {
    v1::StartRanks start;
    HealthWatch health;
    std::shared_ptr<StderrTail> tail = std::make_shared<StderrTail>(kSummaryTailLines);
    OutputRouter router;
    std::shared_ptr<Zygote> zygote;  // its ranks' (JobSpec.warm_standby); outlives the group
    std::unique_ptr<RankGroup> group;
    std::set<std::int32_t> hung;  // ranks this agent killed as hung; guarded by Impl::mutex
    StragglerWatch stragglers;    // among this node's ranks; guarded by Impl::mutex
    Clock::time_point next_skew_check{};
    bool stopping = false;        // guarded by Impl::mutex

    explicit NodeRun(v1::StartRanks assignment)
        : start(std::move(assignment)),
          health(heartbeat_timeout(start.spec()), rdzv_timeout(start.spec())) {}
    const std::string& job_id() const { return start.job_id(); }
    std::int32_t generation() const { return start.generation(); }
  };

  AgentOptions options;
  RendezvousServer server;
  const std::string ranks_tls_ca;  // FABRICD_TLS_CA of the ranks: empty in plain text
  LeaderChannel leader;  // the coordinator, or the leader among several
  LogQueue logs;

  std::mutex mutex;
  std::condition_variable changed;
  bool stopping = false;
  bool session_alive = false;
  std::string agent_id;
  milliseconds heartbeat_interval{1000};
  std::map<std::string, std::shared_ptr<NodeRun>> runs;  // the newest generation of each job
  // JobSpec.warm_standby: each job's zygote on this node, kept across its generations, with
  // the OMP_NUM_THREADS it was loaded with (libgomp reads it as it loads).
  struct JobZygote {
    std::shared_ptr<Zygote> zygote;
    std::string threads;
  };
  std::map<std::string, JobZygote> zygotes;
  std::set<std::pair<std::string, std::int32_t>> started;  // (job, generation) ever started this session
  std::deque<v1::ReportRankExitRequest> exits;            // not yet acknowledged
  grpc::ClientContext* stream_context = nullptr;          // the open assignment stream's
  std::list<std::future<void>> stoppers;                  // groups being stopped
  std::optional<RankMetrics> metrics;
  std::optional<int> heartbeat_collector;

  explicit Impl(AgentOptions agent_options)
      : options(std::move(agent_options)),
        server({.listen = options.rendezvous_listen,
                .advertise_host = options.advertise_host,
                .await_unstarted = kAwaitUnstarted,
                .credentials = rank_facing_credentials(options.security),
                .metrics = options.metrics}),
        ranks_tls_ca(options.security.insecure ? "" : std::filesystem::absolute(options.security.tls.ca).string()),
        leader(options.coordinator,
               [this](const std::string& address) { return secure_channel(address, options.security); }) {
    if (options.metrics) {
      metrics.emplace(*options.metrics);
      heartbeat_collector = options.metrics->add_collector([this](MetricsRegistry::Scrape& scrape) {
        std::lock_guard lock(mutex);
        for (const auto& [job_id, run] : runs) {
          collect_heartbeats(scrape, job_id, server.service().heartbeats(job_id), Clock::now());
          if (run->stragglers.skew()) collect_step_skew(scrape, job_id, *run->stragglers.skew());
        }
      });
    }
  }
  ~Impl() {
    if (heartbeat_collector) options.metrics->remove_collector(*heartbeat_collector);
  }

  std::unique_ptr<v1::AgentService::Stub> stub() { return v1::AgentService::NewStub(leader.channel()); }

  void say(const std::string& text) { std::cerr << "fabricd agent " << options.node_name << ": " << text << std::endl; }

  // --- The session loop -------------------------------------------------------------

  void run() {
    std::thread watcher([this] { watch_health(); });
    milliseconds backoff{100};
    for (;;) {
      {
        std::lock_guard lock(mutex);
        if (stopping) break;
      }
      if (!register_session()) {
        std::unique_lock lock(mutex);
        changed.wait_for(lock, backoff, [&] { return stopping; });
        backoff = std::min(backoff * 2, options.max_backoff);
        continue;
      }
      backoff = milliseconds(100);
      std::thread stream([this] { read_assignments(); });
      std::thread heartbeats([this] { send_heartbeats(); });
      std::thread reporter([this] { report_exits(); });
      std::thread pusher([this] { push_logs(); });
      {
        std::unique_lock lock(mutex);
        changed.wait(lock, [&] { return stopping || !session_alive; });
        session_alive = false;
        if (stream_context) stream_context->TryCancel();
      }
      changed.notify_all();
      stream.join();
      heartbeats.join();
      reporter.join();
      pusher.join();
      std::unique_lock lock(mutex);
      if (!stopping) {
        say("the coordinator ended this session; stopping every rank and registering again");
        clean_slate(lock);
      }
    }
    std::unique_lock lock(mutex);
    clean_slate(lock);
    lock.unlock();
    watcher.join();
  }

  bool register_session() {
    v1::RegisterRequest request;
    request.set_node_name(options.node_name);
    request.set_address(server.endpoint());
    request.set_slots(options.slots);
    request.set_agent_version(kAgentVersion);
    request.set_free_port(free_tcp_port(false));
    v1::RegisterResponse response;
    grpc::ClientContext context;
    const grpc::Status status = stub()->Register(with_deadline(context, milliseconds(5000)), request, &response);
    if (!status.ok()) {
      leader.follow(status, context);
      if (status.error_code() != grpc::StatusCode::UNAVAILABLE && status.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED) {
        say("registration refused: " + status.error_message());
      }
      return false;
    }
    std::lock_guard lock(mutex);
    agent_id = response.agent_id();
    heartbeat_interval = std::max(to_milliseconds(response.heartbeat_interval()), milliseconds(10));
    session_alive = true;
    say("registered as " + agent_id + " (rendezvous at " + server.endpoint() + ")");
    return true;
  }

  void end_session() {
    {
      std::lock_guard lock(mutex);
      session_alive = false;
    }
    changed.notify_all();
  }

  bool in_session() {
    std::lock_guard lock(mutex);
    return session_alive && !stopping;
  }

  std::string session_id() {
    std::lock_guard lock(mutex);
    return agent_id;
  }

  // Waits `duration` unless the session ends first; returns whether it is still on.
  bool pause(milliseconds duration) {
    std::unique_lock lock(mutex);
    return !changed.wait_for(lock, duration, [&] { return stopping || !session_alive; });
  }

  // Nobody expects our ranks any more: stop them, forget what we started and reported.
  void clean_slate(std::unique_lock<std::mutex>& lock) {
    for (auto& [job_id, run] : runs) stop_run(run, grace_period(run->start.spec()), /*release=*/true);
    runs.clear();
    zygotes.clear();  // each also held by its runs until they are stopped
    started.clear();
    exits.clear();
    logs.clear();
    std::list<std::future<void>> pending = std::move(stoppers);
    lock.unlock();
    for (auto& stopper : pending) stopper.wait();
    lock.lock();
  }

  // --- Assignments ------------------------------------------------------------------

  void read_assignments() {
    milliseconds backoff{100};
    while (in_session()) {
      grpc::ClientContext context;
      {
        std::lock_guard lock(mutex);
        if (!session_alive) return;
        stream_context = &context;
      }
      v1::StreamAssignmentsRequest request;
      request.set_agent_id(session_id());
      auto reader = stub()->StreamAssignments(&context, request);
      v1::Assignment assignment;
      while (reader->Read(&assignment)) {
        backoff = milliseconds(100);
        if (assignment.has_start()) start_ranks(assignment.start());
        if (assignment.has_stop()) stop_job(assignment.stop());
      }
      const grpc::Status status = reader->Finish();
      {
        std::lock_guard lock(mutex);
        stream_context = nullptr;
      }
      if (status.error_code() == grpc::StatusCode::NOT_FOUND) return end_session();
      if (leader.follow(status, context)) continue;
      if (!pause(backoff)) return;
      backoff = std::min(backoff * 2, options.max_backoff);
    }
  }

  // The whole environment of the ranks of `start` on this node, before RANK & co.
  Environment node_env(const v1::StartRanks& start) {
    Environment env = inherited_environment();
    for (const auto& [name, value] : start.env()) env[name] = value;
    add_job_credentials(env, start.job_secret(), ranks_tls_ca);
    add_thread_limit(env, start.ranks_size(), available_cpus());
    return env;
  }

  // Serves the generation's rendezvous here: its ranks' heartbeats, and the job's store
  // when this node holds node rank 0.
  void serve_rendezvous(const v1::StartRanks& start, const HealthWatch& health) {
    RendezvousServiceImpl& service = server.service();
    const RendezvousJobOptions job_options{.rdzv_timeout = rdzv_timeout(start.spec()),
                                           .heartbeat_interval = health.heartbeat_interval(),
                                           .generation = start.generation(),
                                           .secret = start.job_secret()};
    const auto current = service.generation(start.job_id());
    if (current && *current >= start.generation()) return;
    // The world size may change between generations of an elastic job: then it starts afresh.
    if (current) service.end_job(start.job_id());
    service.start_job(start.job_id(), start.world_size(), job_options);
  }

  void start_ranks(const v1::StartRanks& start) {
    std::shared_ptr<NodeRun> older;
    {
      std::lock_guard lock(mutex);
      if (!started.insert({start.job_id(), start.generation()}).second) return;  // resent on reconnection
      if (auto it = runs.find(start.job_id()); it != runs.end()) older = it->second;
    }
    if (older && older->generation() < start.generation()) {
      std::unique_lock lock(mutex);
      stop_run(older, milliseconds(0), /*release=*/false);
    }
    auto run = std::make_shared<NodeRun>(start);
    serve_rendezvous(start, run->health);
    const v1::JobSpec& spec = start.spec();
    if (!spec.log().dir().empty()) {
      std::error_code ignored;
      std::filesystem::create_directories(spec.log().dir(), ignored);
      run->router.add(std::make_shared<FileSink>(spec.log().dir(), file_streams(spec.log())));
    }
    run->router.add(run->tail);
    run->router.add(std::make_shared<PushSink>(logs, start.job_id(), options.node_name));
    const Environment base = node_env(start);
    RankGroupOptions group{.args = {spec.args().begin(), spec.args().end()},
                           .working_dir = spec.working_dir(),
                           .generation = start.generation()};
    for (int local = 0; local < start.ranks_size(); ++local) {
      RankProcess rank{.rank = start.ranks(local), .local_rank = local, .env = base};
      add_process_variables(rank.env, rank.rank, local, server.endpoint(), options.advertise_host);
      group.ranks.push_back(std::move(rank));
    }
    say("starting ranks " + std::to_string(start.ranks(0)) + ".." + std::to_string(start.ranks(start.ranks_size() - 1)) +
        " of job " + start.job_id() + ", generation " + std::to_string(start.generation()));
    try {
      const auto path = base.find("PATH");
      group.program = resolve_program(spec.program(), spec.working_dir(), path == base.end() ? "" : path->second);
      if (spec.warm_standby()) {
        run->zygote = zygote_for(start, group.program, base);
        group.zygote = run->zygote.get();
      }
      NodeRun* self = run.get();
      run->group = std::make_unique<RankGroup>(std::move(group), run->router,
                                               [this, self](const RankEnded& ended) { on_rank_exit(*self, ended); });
    } catch (const SpawnError& error) {
      say(error.what());
      std::lock_guard lock(mutex);
      for (int local = 0; local < start.ranks_size(); ++local) {
        v1::RankExit exit;
        exit.set_rank(start.ranks(local));
        exit.set_local_rank(local);
        exit.set_generation(start.generation());
        exit.set_cause(v1::RankExit::CAUSE_SPAWN_FAILED);
        exit.set_exit_code(error.status());
        exit.mutable_reported_error()->set_message(error.what());
        exit.mutable_reported_error()->set_error_type("SpawnError");
        queue_exit(start.job_id(), std::move(exit));
      }
      return;
    }
    std::lock_guard lock(mutex);
    runs[start.job_id()] = std::move(run);
  }

  // The job's zygote on this node: started with its first generation here (or anew when the
  // thread limit changed, as an elastic job's can), waited for until it is loaded, so that
  // its forks are quick. None for a program without libfabric's standby hook, or one that
  // cannot be forked (its ranks are then started the usual way; agents keep no standbys).
  std::shared_ptr<Zygote> zygote_for(const v1::StartRanks& start, const std::string& program, const Environment& base) {
    const auto threads = base.find("OMP_NUM_THREADS");
    const std::string limit = threads == base.end() ? "" : threads->second;
    std::shared_ptr<Zygote> zygote;
    {
      std::lock_guard lock(mutex);
      if (const auto known = zygotes.find(start.job_id()); known != zygotes.end() && known->second.threads == limit) {
        zygote = known->second.zygote;
      }
    }
    if (!zygote) {
      if (!has_standby_hook(program)) {
        say(without_standby_hook(program));
        return nullptr;
      }
      Environment env = base;
      env.erase("FABRICD_JOB_SECRET");  // given to each rank with its environment
      zygote = std::make_shared<Zygote>(ProcessSpec{.program = program,
                                                    .args = {start.spec().args().begin(), start.spec().args().end()},
                                                    .working_dir = start.spec().working_dir(),
                                                    .env = std::move(env)});
      std::lock_guard lock(mutex);
      zygotes[start.job_id()] = JobZygote{.zygote = zygote, .threads = limit};
    }
    if (!zygote->serving()) {
      say("--warm-standby: no zygote (" + zygote->refusal() + "); ranks are started the usual way");
      return nullptr;
    }
    say("ranks of job " + start.job_id() + " forked from a zygote of the program (pid " +
        std::to_string(zygote->pid()) + ") that loaded it once");
    return zygote;
  }

  // Stops a run's ranks on a thread of their own (the grace period must not hold up the
  // assignment stream); `release` also ends its rendezvous once they are gone.
  void stop_run(const std::shared_ptr<NodeRun>& run, milliseconds grace, bool release) {
    if (run->stopping || !run->group) return;
    run->stopping = true;
    stoppers.remove_if([](std::future<void>& f) { return f.wait_for(std::chrono::seconds(0)) == std::future_status::ready; });
    stoppers.push_back(std::async(std::launch::async, [this, run, grace, release] {
      run->group->stop(grace);
      run->group.reset();  // joins its output
      std::lock_guard lock(mutex);
      const auto current = runs.find(run->job_id());
      const bool newest = current == runs.end() || current->second == run;
      if (release && newest) {
        server.service().end_job(run->job_id());
        zygotes.erase(run->job_id());  // the job is done here: the zygote goes with the run
      }
      if (current != runs.end() && current->second == run) runs.erase(current);
    }));
  }

  void stop_job(const v1::StopJob& stop) {
    std::unique_lock lock(mutex);
    const auto it = runs.find(stop.job_id());
    const bool release = stop.reason() != v1::StopJob::REASON_RESTART;
    if (it == runs.end()) {
      if (release) {
        server.service().end_job(stop.job_id());
        zygotes.erase(stop.job_id());
      }
      return;
    }
    if (it->second->generation() > stop.generation()) return;  // a late stop never kills a newer generation
    if (it->second->stopping) return;
    say("stopping job " + stop.job_id() + " generation " + std::to_string(it->second->generation()));
    // Ranks that heartbeat learn why during the grace period (RankHeartbeatResponse).
    server.service().request_stop(stop.job_id(), v1::StopJob::Reason_Name(stop.reason()));
    stop_run(it->second, to_milliseconds(stop.grace_period()), release);
  }

  // --- Rank exits, health, heartbeats, logs -----------------------------------------

  void queue_exit(const std::string& job_id, v1::RankExit exit) {
    *exit.mutable_time() = TimeUtil::GetCurrentTime();
    v1::ReportRankExitRequest request;
    request.set_job_id(job_id);
    *request.mutable_exit() = std::move(exit);
    exits.push_back(std::move(request));
    changed.notify_all();
  }

  void on_rank_exit(NodeRun& run, const RankEnded& ended) {
    v1::RankExit exit;
    exit.set_rank(ended.rank);
    exit.set_local_rank(ended.local_rank);
    exit.set_generation(ended.generation);
    if (ended.signaled()) {
      exit.set_signal(ended.status - 128);
    } else {
      exit.set_exit_code(ended.status);
    }
    for (const auto& line : run.tail->of(ended.rank)) exit.add_stderr_tail(line);
    const auto errors = server.service().reported_errors(run.job_id());
    if (auto error = errors.find(ended.rank); error != errors.end()) *exit.mutable_reported_error() = error->second;
    std::lock_guard lock(mutex);
    if (run.hung.contains(ended.rank)) {
      exit.set_cause(v1::RankExit::CAUSE_HEARTBEAT_TIMEOUT);
    } else if (run.stopping) {
      exit.set_cause(v1::RankExit::CAUSE_STOPPED);
    } else {
      exit.set_cause(ended.signaled() ? v1::RankExit::CAUSE_SIGNALED : v1::RankExit::CAUSE_EXITED);
    }
    if (metrics) metrics->rank_exits.add({exit_cause(exit)});
    queue_exit(run.job_id(), std::move(exit));
  }

  // Names a new straggler among the node's ranks (the coordinator does not compare nodes
  // yet). Called with the lock held.
  void check_stragglers(NodeRun& run, const std::map<std::int32_t, RankHeartbeat>& heartbeats) {
    const std::vector<std::int32_t> ranks(run.start.ranks().begin(), run.start.ranks().end());
    if (auto named = run.stragglers.check(heartbeats, ranks)) {
      say("straggler in job " + run.job_id() + ": " + run.stragglers.skew()->describe(*named) + " over the last " +
          std::to_string(run.stragglers.skew()->steps) + " steps");
      if (metrics) metrics->straggler_warnings.add({});
    }
  }

  void watch_health() {
    std::unique_lock lock(mutex);
    while (!stopping || !runs.empty()) {
      const auto now = Clock::now();
      for (auto& [job_id, run] : runs) {
        if (run->stopping || !run->group) continue;
        const auto heartbeats = server.service().heartbeats(job_id);
        if (now >= run->next_skew_check) {
          run->next_skew_check = now + kStragglerCheckInterval;
          check_stragglers(*run, heartbeats);
        }
        const auto hung = run->health.find_hung(now, run->group->running(), heartbeats);
        if (!hung || run->hung.contains(hung->rank)) continue;
        say("rank " + std::to_string(hung->rank) + " of job " + job_id + " " + hung->detail + "; killing it");
        run->hung.insert(hung->rank);
        run->group->signal_rank(hung->rank, SIGKILL);  // a hung rank could not act on SIGTERM
      }
      changed.wait_for(lock, kWatchInterval);
      if (stopping && runs.empty()) break;
    }
  }

  void report_exits() {
    milliseconds backoff{100};
    while (in_session()) {
      v1::ReportRankExitRequest request;
      {
        std::unique_lock lock(mutex);
        changed.wait(lock, [&] { return !session_alive || stopping || !exits.empty(); });
        if (!session_alive || stopping) return;
        request = exits.front();
        request.set_agent_id(agent_id);
      }
      grpc::ClientContext context;
      v1::ReportRankExitResponse response;
      const grpc::Status status = stub()->ReportRankExit(with_deadline(context, milliseconds(5000)), request, &response);
      // NOT_FOUND: the job is forgotten, or the session is over (the heartbeat tells which).
      if (status.ok() || status.error_code() == grpc::StatusCode::NOT_FOUND) {
        std::lock_guard lock(mutex);
        if (!exits.empty()) exits.pop_front();
        backoff = milliseconds(100);
        continue;
      }
      if (leader.follow(status, context)) continue;
      if (!pause(backoff)) return;
      backoff = std::min(backoff * 2, options.max_backoff);
    }
  }

  // The latest heartbeat of each rank, for the coordinator's view of the job's progress.
  void add_reports(v1::RunningRanks& running, const std::map<std::int32_t, RankHeartbeat>& heartbeats) const {
    const auto now = Clock::now();
    for (const auto& [rank, heartbeat] : heartbeats) {
      v1::RankReport& report = *running.add_reports();
      *report.mutable_progress() = rank_progress(rank, heartbeat, options.node_name, now);
      for (const auto& arrival : heartbeat.arrivals) {
        v1::StepArrival& sent = *report.add_arrivals();
        sent.set_step(arrival.step);
        sent.set_unix_nanos(arrival.unix_nanos);
      }
    }
  }

  void send_heartbeats() {
    while (in_session()) {
      v1::AgentHeartbeatRequest request;
      milliseconds interval;
      {
        std::lock_guard lock(mutex);
        request.set_agent_id(agent_id);
        for (const auto& [job_id, run] : runs) {
          if (!run->group) continue;
          const auto live = run->group->running();
          if (live.empty()) continue;
          auto& running = *request.add_running();
          running.set_job_id(job_id);
          running.set_generation(run->generation());
          for (const auto rank : live) running.add_ranks(rank);
          add_reports(running, server.service().heartbeats(job_id));
        }
        interval = heartbeat_interval;
      }
      request.set_free_port(free_tcp_port(false));
      grpc::ClientContext context;
      v1::AgentHeartbeatResponse response;
      const grpc::Status status = stub()->Heartbeat(with_deadline(context, interval * 2), request, &response);
      if (status.error_code() == grpc::StatusCode::NOT_FOUND) return end_session();
      leader.follow(status, context);
      // Any other failure: the coordinator is away (restarting?); the ranks run on.
      if (!pause(interval)) return;
    }
  }

  void push_logs() {
    while (in_session()) {
      grpc::ClientContext context;
      v1::PushLogsResponse response;
      auto writer = stub()->PushLogs(&context, &response);
      bool open = true;
      while (open && in_session()) {
        std::vector<v1::LogLine> batch = logs.take(milliseconds(200));
        if (batch.empty()) continue;
        v1::PushLogsRequest request;
        request.set_agent_id(session_id());
        for (auto& line : batch) *request.add_lines() = std::move(line);
        open = writer->Write(request);  // best effort: a failed batch is dropped
      }
      writer->WritesDone();
      leader.follow(writer->Finish(), context);
      if (!pause(milliseconds(200))) return;
    }
  }

  void stop() {
    {
      std::lock_guard lock(mutex);
      stopping = true;
      if (stream_context) stream_context->TryCancel();
    }
    changed.notify_all();
  }
};

Agent::Agent(AgentOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}
Agent::~Agent() = default;

void Agent::run() { impl_->run(); }
void Agent::stop() { impl_->stop(); }

}  // namespace fabric::launcher
