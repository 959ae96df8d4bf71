#include "local/local_job.h"

#include <signal.h>
#include <unistd.h>

#include <google/protobuf/util/time_util.h>

#include <condition_variable>
#include <cstring>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>

#include "jobs/job_spec.h"
#include "security/secrets.h"
#include "ranks/health_watch.h"
#include "ranks/job_progress.h"
#include "ranks/output_router.h"
#include "ranks/ports.h"
#include "ranks/rank_environment.h"
#include "ranks/rank_group.h"
#include "ranks/rank_metrics.h"
#include "ranks/standby_pool.h"
#include "ranks/zygote.h"
#include "ranks/straggler_watch.h"
#include "rendezvous/rendezvous_server.h"

namespace fabric::launcher {

namespace v1 = fabric::v1;

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// How often the job looks at heartbeats and the rendezvous while ranks run: the slack on
// top of heartbeat_timeout within which a hang is declared.
constexpr milliseconds kWatchInterval{100};

std::string describe(int status) {
  if (status > 128) return "signal " + std::to_string(status - 128) + " (" + strsignal(status - 128) + ")";
  return "exit code " + std::to_string(status);
}

// Why a generation ended badly: the first rank to fail, and how.
struct Failure {
  enum class Cause { kExited, kHung, kRendezvousTimeout };
  Cause cause = Cause::kExited;
  std::int32_t rank = 0;
  std::string detail;  // for kHung / kRendezvousTimeout
};

}  // namespace

std::string unique_local_job_id() {
  std::random_device random;
  std::ostringstream id;
  id << "local-" << ::getpid() << "-" << std::hex << (random() & 0xffffff);
  return id.str();
}

struct LocalJob::Impl {
  const v1::JobSpec spec;
  const std::string job_id;
  const LocalJobHooks hooks;
  const HealthWatch health;
  std::shared_ptr<ConsoleSink> console;
  OutputRouter router;
  std::shared_ptr<StderrTail> tail = std::make_shared<StderrTail>(kSummaryTailLines);
  RendezvousServer server{{.metrics = hooks.metrics}};  // after the sinks: it may still be answering while they go
  std::optional<RankMetrics> metrics;
  std::optional<int> heartbeat_collector;
  StragglerWatch stragglers;  // guarded by mutex
  Clock::time_point next_skew_check{};
  const std::string secret = random_secret();  // the ranks' FABRICD_JOB_SECRET
  const int cpus = available_cpus();           // shared by the ranks (add_thread_limit)
  const std::string node_name = host_name();   // the node its progress and failures name

  // JobSpec.warm_standby: the zygote every generation's ranks are forked from; when it cannot
  // fork, warm standbys for the next generation, while restarts are left.
  std::unique_ptr<Zygote> zygote;
  std::unique_ptr<StandbyPool> standbys;
  bool standbys_filled = false;  // for the current generation; guarded by mutex

  std::mutex mutex;
  std::condition_variable changed;
  std::shared_ptr<RankGroup> group;  // the current generation's; guarded by mutex
  std::optional<Failure> failure;    // the current generation's first; guarded by mutex
  bool stopping = false;             // ranks exiting now were stopped by us
  std::optional<int> stop_signal;
  bool kill_now = false;

  Impl(v1::JobSpec job, std::ostream& out, std::ostream& err_stream, LocalJobHooks job_hooks, std::string id)
      : spec(std::move(job)),
        job_id(id.empty() ? unique_local_job_id() : std::move(id)),
        hooks(std::move(job_hooks)),
        health(heartbeat_timeout(spec), rdzv_timeout(spec)) {
    std::set<std::int32_t> console_ranks(spec.log().console_ranks().begin(), spec.log().console_ranks().end());
    console = std::make_shared<ConsoleSink>(out, err_stream, console_streams(spec.log()), std::move(console_ranks));
    router.add(console);
    if (!spec.log().dir().empty()) router.add(std::make_shared<FileSink>(spec.log().dir(), file_streams(spec.log())));
    router.add(tail);
    if (hooks.lines) router.add(hooks.lines);
    server.service().start_job(job_id, spec.nproc_per_node(),
                               {.rdzv_timeout = rdzv_timeout(spec),
                                .heartbeat_interval = health.heartbeat_interval(),
                                .secret = secret});
    if (spec.warm_standby()) start_warm_standby();
    if (hooks.metrics) {
      metrics.emplace(*hooks.metrics);
      heartbeat_collector = hooks.metrics->add_collector([this](MetricsRegistry::Scrape& scrape) {
        const auto heartbeats = server.service().heartbeats(job_id);
        collect_heartbeats(scrape, job_id, heartbeats, Clock::now());
        std::lock_guard lock(mutex);
        if (stragglers.skew()) collect_step_skew(scrape, job_id, *stragglers.skew());
        if (!heartbeats.empty()) collect_job_progress(scrape, job_id, progress(heartbeats));
      });
    }
  }
  ~Impl() {
    if (heartbeat_collector) hooks.metrics->remove_collector(*heartbeat_collector);
  }

  void say(const std::string& text) { console->message(text); }

  RankGroupOptions generation_options(std::int32_t generation) {
    const Environment node =
        node_environment({.job_id = job_id,
                          .generation = generation,
                          .max_restarts = spec.max_restarts(),
                          .nproc_per_node = spec.nproc_per_node(),
                          .master_port = free_tcp_port(/*loopback_only=*/true),
                          .store_endpoint = server.endpoint()},
                         Environment(spec.env().begin(), spec.env().end()));
    RankGroupOptions options{.program = spec.program(),
                             .args = {spec.args().begin(), spec.args().end()},
                             .working_dir = spec.working_dir(),
                             .generation = generation};
    Environment base = inherited_environment();
    for (const auto& [name, value] : node) base[name] = value;
    add_job_credentials(base, secret, /*tls_ca=*/"");  // loopback: plain text
    add_thread_limit(base, spec.nproc_per_node(), cpus);
    for (std::int32_t r = 0; r < spec.nproc_per_node(); ++r) {
      RankProcess rank{.rank = r, .local_rank = r, .env = base};
      add_process_variables(rank.env, r, r, server.endpoint(), "127.0.0.1");
      options.ranks.push_back(std::move(rank));
    }
    return options;
  }

  // What a standby is loaded with: the ranks' environment without what a rank is given
  // for its generation (its rank, ports, restart count, credentials), which it gets when
  // taken. The same thread limit: libgomp reads OMP_NUM_THREADS as it loads.
  ProcessSpec standby_spec() const {
    Environment env = inherited_environment();
    for (const auto& [name, value] : spec.env()) env[name] = value;
    add_thread_limit(env, spec.nproc_per_node(), cpus);
    return {.program = spec.program(),
            .args = {spec.args().begin(), spec.args().end()},
            .working_dir = spec.working_dir(),
            .env = std::move(env)};
  }

  // A zygote, and a pool of standbys in case it cannot fork; neither for a program without
  // libfabric's standby hook, which would run as a rank of nothing.
  void start_warm_standby() {
    if (!has_standby_hook(spec.program())) {
      say(without_standby_hook(spec.program()));
      return;
    }
    const ProcessSpec loaded_with = standby_spec();
    zygote = std::make_unique<Zygote>(loaded_with);
    if (spec.max_restarts() > 0) standbys = std::make_unique<StandbyPool>(loaded_with);
  }

  // Once every rank of the generation has joined the rendezvous (past its own loading, so
  // the standbys do not slow its start), one standby per rank is started for the next
  // generation, if a restart is left and the zygote cannot fork it. Called with the lock.
  void fill_standbys(std::int32_t generation) {
    if (!standbys || standbys_filled || generation >= spec.max_restarts()) return;
    if (zygote && zygote->serving()) return;
    if (static_cast<std::int32_t>(server.service().joined_ranks(job_id).size()) < spec.nproc_per_node()) return;
    standbys_filled = true;
    try {
      standbys->fill(static_cast<std::size_t>(spec.nproc_per_node()));
    } catch (const SpawnError& error) {  // the next restart starts its ranks itself
      say(std::string("no warm standbys: ") + error.what());
    }
  }

  // "generation 1: 2 of 2 ranks were warm standbys (pids 812, 813)", in rank order.
  std::string standbys_taken(const RankGroup& taken) const {
    std::string pids;
    for (const std::int32_t rank : taken.standby_ranks()) {
      pids += (pids.empty() ? "" : ", ") + std::to_string(taken.pid(rank).value_or(0));
    }
    return "generation " + std::to_string(taken.generation()) + ": " + std::to_string(taken.standby_ranks().size()) +
           " of " + std::to_string(spec.nproc_per_node()) + " ranks were warm standbys (pids " + pids + ")";
  }

  void on_exit(const RankEnded& ended) {
    std::lock_guard lock(mutex);
    if (metrics) {
      const bool hung = failure && failure->cause == Failure::Cause::kHung && failure->rank == ended.rank;
      metrics->rank_exits.add({hung ? "hung" : stopping && ended.status != 0 ? "stopped" : exit_cause(ended.status)});
    }
    if (ended.status != 0 && !failure && !stopping) failure = Failure{.rank = ended.rank};
    changed.notify_all();
  }

  // Waits until the generation succeeds, fails, or fabricd is told to stop.
  void supervise(std::unique_lock<std::mutex>& lock) {
    while (!(group->all_exited() || failure || stop_signal)) {
      const auto now = Clock::now();
      fill_standbys(group->generation());
      if (auto hung = health.find_hung(now, group->running(), server.service().heartbeats(job_id))) {
        failure = Failure{.cause = Failure::Cause::kHung, .rank = hung->rank, .detail = hung->detail};
        say("rank " + std::to_string(hung->rank) + " " + hung->detail + "; killing it");
        group->signal_rank(hung->rank, SIGKILL);  // a hung rank could not act on SIGTERM
        break;
      }
      if (now >= next_skew_check) {
        next_skew_check = now + kStragglerCheckInterval;
        check_stragglers();
        const auto heartbeats = server.service().heartbeats(job_id);
        if (hooks.on_progress && !heartbeats.empty()) hooks.on_progress(progress(heartbeats));
      }
      if (auto late = health.find_rendezvous_timeout(now, spec.nproc_per_node(), server.service().joined_ranks(job_id))) {
        failure = Failure{.cause = Failure::Cause::kRendezvousTimeout, .rank = late->rank, .detail = late->detail};
        break;
      }
      changed.wait_for(lock, kWatchInterval);
    }
  }

  // Compares the ranks' arrivals at their steps' synchronization; names a new straggler.
  // Called with the lock held.
  void check_stragglers() {
    std::vector<std::int32_t> ranks;
    for (std::int32_t r = 0; r < spec.nproc_per_node(); ++r) ranks.push_back(r);
    if (auto named = stragglers.check(server.service().heartbeats(job_id), ranks)) {
      say("straggler: " + stragglers.skew()->describe(*named) + " over the last " +
          std::to_string(stragglers.skew()->steps) + " steps");
      if (metrics) metrics->straggler_warnings.add({});
    }
  }

  // The generation's progress from these heartbeats. Called with the lock held (stragglers).
  v1::JobProgress progress(const std::map<std::int32_t, RankHeartbeat>& heartbeats) const {
    return job_progress(ranks_progress(heartbeats, node_name, Clock::now()), stragglers.skew(),
                        std::chrono::system_clock::now());
  }

  // The failed generation as job.proto describes it, for LocalJobHooks::on_failure.
  v1::FailureSummary failure_record(const Failure& first, int status, std::int32_t generation,
                                    const std::string& message) const {
    v1::FailureSummary summary;
    summary.set_generation(generation);
    summary.set_node(node_name);
    summary.set_message(message);
    v1::RankExit& exit = *summary.mutable_first_failure();
    exit.set_rank(first.rank);
    exit.set_local_rank(first.rank);
    exit.set_generation(generation);
    if (first.cause == Failure::Cause::kHung) {
      exit.set_cause(v1::RankExit::CAUSE_HEARTBEAT_TIMEOUT);
      exit.set_signal(SIGKILL);
    } else if (status > 128) {
      exit.set_cause(v1::RankExit::CAUSE_SIGNALED);
      exit.set_signal(status - 128);
    } else {
      exit.set_cause(v1::RankExit::CAUSE_EXITED);
      exit.set_exit_code(status);
    }
    for (const auto& line : tail->of(first.rank)) exit.add_stderr_tail(line);
    *exit.mutable_time() = google::protobuf::util::TimeUtil::GetCurrentTime();
    return summary;
  }

  // SIGTERM to every rank still running, up to the grace period, then SIGKILL. Unlocks
  // while the ranks go, since their exits take the lock.
  void stop_group(std::unique_lock<std::mutex>& lock) {
    stopping = true;
    const std::shared_ptr<RankGroup> current = group;
    const bool kill = kill_now;
    lock.unlock();
    if (kill) current->kill();
    if (!current->stop(grace_period(spec))) {
      say("ranks still running " + format_seconds(grace_period(spec)) + " after SIGTERM: SIGKILL");
    }
    lock.lock();
  }

  // Destroys the generation's group (joining its output, so the tail is complete).
  void end_generation(std::unique_lock<std::mutex>& lock) {
    std::shared_ptr<RankGroup> ended = std::move(group);
    lock.unlock();
    ended.reset();
    lock.lock();
  }

  // "job failed: rank 1 failed first, with signal 9 (hung: ...)", then what it reported and
  // its last stderr lines.
  std::string failure_summary(const Failure& first, int status, std::int32_t generation) {
    std::string summary = "job failed: rank " + std::to_string(first.rank) + " failed first, with " +
                          describe(status) + (first.detail.empty() ? "" : " (" + first.detail + ")") +
                          (spec.max_restarts() > 0 ? " after " + std::to_string(generation) + " restart(s)" : "");
    const auto errors = server.service().reported_errors(job_id);
    if (auto error = errors.find(first.rank); error != errors.end()) {
      summary += "\n  it reported " + error->second.error_type() + ": " + error->second.message().substr(0, 2000);
      if (error->second.has_step()) summary += "\n  at step " + std::to_string(error->second.step());
    }
    const auto lines = tail->of(first.rank);
    if (!lines.empty()) {
      summary += "\n  its last stderr lines:";
      for (const auto& line : lines) summary += "\n    " + line;
    }
    return summary;
  }

  void tell(v1::JobState state, std::int32_t generation, const std::string& message) {
    if (hooks.on_state) hooks.on_state(state, generation, message);
  }

  // run_generations(), and the terminal state its status means.
  int run() {
    std::int32_t generation = 0;
    const int status = run_generations(generation);
    if (status == 0) {
      tell(v1::JOB_STATE_SUCCEEDED, generation, "every rank of generation " + std::to_string(generation) + " exited 0");
    } else if (stop_signal && status == 128 + *stop_signal) {
      tell(v1::JOB_STATE_CANCELLED, generation, "cancelled: fabricd received signal " + std::to_string(*stop_signal));
    } else {
      tell(v1::JOB_STATE_FAILED, generation, last_failure);
    }
    return status;
  }

  std::string last_failure;  // the summary of the last failed generation

  int run_generations(std::int32_t& generation) {
    for (generation = 0;; ++generation) {
      if (generation > 0) server.service().begin_generation(job_id, generation);
      tail->clear();
      // Loaded (or refused) before the lock is taken: the forks are then quick, and a stop
      // requested while the zygote loads is heard (request_stop abandons it).
      if (zygote) zygote->serving();
      std::unique_lock lock(mutex);
      failure.reset();
      stopping = false;
      stragglers.reset();
      standbys_filled = false;
      try {
        RankGroupOptions options = generation_options(generation);
        options.standbys = standbys.get();
        options.zygote = zygote.get();
        group = std::make_shared<RankGroup>(std::move(options), router,
                                            [this](const RankEnded& ended) { on_exit(ended); });
      } catch (const SpawnError& error) {  // e.g. execve refused the program
        say(error.what());
        last_failure = error.what();
        return kCannotStart;
      }
      if (!group->standby_ranks().empty()) say(standbys_taken(*group));
      if (!group->forked_ranks().empty() && generation == 0) {
        say("ranks forked from a zygote of the program (pid " + std::to_string(zygote->pid()) +
            ") that loaded it once");
      }
      if (zygote && group->forked_ranks().empty() && generation == 0) {
        say("--warm-standby: no zygote (" + zygote->refusal() + "); ranks are started the usual way" +
            (standbys ? ", restarts from warm standbys" : ""));
      }
      if (generation >= spec.max_restarts()) standbys.reset();  // no restart left to wait for
      tell(v1::JOB_STATE_RUNNING, generation, "running generation " + std::to_string(generation));
      supervise(lock);
      if (stop_signal && !failure) {
        say("stopping the job (signal " + std::to_string(*stop_signal) + ")");
        stop_group(lock);
        end_generation(lock);
        return 128 + *stop_signal;
      }
      if (!failure) {
        end_generation(lock);
        return 0;
      }
      const Failure first = *failure;
      if (first.cause == Failure::Cause::kRendezvousTimeout) {
        say(first.detail);
        last_failure = first.detail;
        stop_group(lock);
        end_generation(lock);
        return kRendezvousTimeout;
      }
      if (first.cause == Failure::Cause::kExited) {
        say("rank " + std::to_string(first.rank) + " failed with " + describe(*group->status(first.rank)) +
                   "; stopping the other ranks");
      }
      stop_group(lock);
      const int status = *group->status(first.rank);
      end_generation(lock);
      const std::string summary = failure_summary(first, status, generation);
      // "rank 1 failed first, with ...": the summary's first line without its "job failed: ".
      last_failure = summary.substr(std::string("job failed: ").size(), summary.find('\n') - std::string("job failed: ").size());
      if (hooks.on_failure) hooks.on_failure(failure_record(first, status, generation, last_failure));
      if (generation < spec.max_restarts() && !stop_signal) {
        say("restarting the job: generation " + std::to_string(generation + 1) + " of at most " +
                   std::to_string(spec.max_restarts() + 1));
        tell(v1::JOB_STATE_RESTARTING, generation + 1, "restarting after " + last_failure);
        if (metrics) metrics->restarts.add({first.cause == Failure::Cause::kHung ? "hung" : exit_cause(status)});
        continue;
      }
      say(summary);
      return status;
    }
  }

  // Under the lock, and without a copy of `group`: a copy would let the group outlive this
  // Impl, and its waiter threads would then report exits to a freed job (on_exit).
  // group->kill() only takes the group's own lock, which is always taken after this one.
  void request_stop(int signal, bool immediately) {
    std::lock_guard lock(mutex);
    stop_signal = signal;
    server.service().request_stop(job_id, std::string("fabricd received ") + strsignal(signal));
    if (immediately) {
      kill_now = true;
      if (group) group->kill();
    }
    // No ranks yet to stop gracefully (the zygote may still be loading), or none to spare.
    if (zygote && (immediately || !group)) zygote->abandon(std::string("fabricd received ") + strsignal(signal));
    changed.notify_all();
  }
};

LocalJob::LocalJob(v1::JobSpec spec, std::ostream& out, std::ostream& err, LocalJobHooks hooks, std::string job_id)
    : impl_(std::make_unique<Impl>(std::move(spec), out, err, std::move(hooks), std::move(job_id))) {}

const std::string& LocalJob::job_id() const { return impl_->job_id; }
LocalJob::~LocalJob() = default;

int LocalJob::run() { return impl_->run(); }
void LocalJob::request_stop(int signal, bool immediately) { impl_->request_stop(signal, immediately); }

}  // namespace fabric::launcher
