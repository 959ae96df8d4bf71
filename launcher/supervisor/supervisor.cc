#include "supervisor/supervisor.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <boost/process.hpp>
#include <boost/process/extend.hpp>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <thread>

#include "rendezvous/rendezvous_service.h"

namespace bp = boost::process;

namespace fabric::launcher {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// How often the supervisor looks at heartbeats and the rendezvous while ranks run: the
// slack on top of heartbeat_timeout within which a hang is declared.
constexpr milliseconds kWatchInterval{100};

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address));
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  ::close(fd);
  return ntohs(address.sin_port);
}

std::string describe(int status) {
  if (status > 128) return "signal " + std::to_string(status - 128) + " (" + strsignal(status - 128) + ")";
  return "exit code " + std::to_string(status);
}

std::string seconds(milliseconds duration) {
  std::ostringstream text;
  text << std::fixed << std::setprecision(1) << duration.count() / 1000.0 << " s";
  return text.str();
}

std::string unique_job_id() {
  std::random_device random;
  std::ostringstream id;
  id << "local-" << ::getpid() << "-" << std::hex << (random() & 0xffffff);
  return id.str();
}

// What the heartbeats say about a hung rank: "in train at step 31".
std::string where(const RankHeartbeat& beat) {
  std::string text = "in " + (beat.phase.empty() ? std::string("an unnamed phase") : beat.phase);
  if (beat.step) text += " at step " + std::to_string(*beat.step);
  return text;
}

// Console output shared by every rank's reader threads: whole lines only.
class Console {
 public:
  void line(int rank, const std::string& text, bool error) {
    std::lock_guard lock(mutex_);
    (error ? std::cerr : std::cout) << "[rank " << rank << "] " << text << '\n' << std::flush;
  }
  void say(const std::string& text) {
    std::lock_guard lock(mutex_);
    std::cerr << "fabricd: " << text << std::endl;
  }

 private:
  std::mutex mutex_;
};

// The job's RendezvousService on a loopback port of its own.
class RendezvousServer {
 public:
  RendezvousServer() {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    if (!server_ || port_ == 0) throw std::runtime_error("cannot listen on a loopback port for the rendezvous");
  }
  ~RendezvousServer() {
    service_.shutdown();  // wakes blocked calls first, so Shutdown does not wait on them
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  }
  RendezvousServiceImpl& service() { return service_; }
  std::string endpoint() const { return "127.0.0.1:" + std::to_string(port_); }

 private:
  RendezvousServiceImpl service_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
};

}  // namespace

struct Supervisor::Impl {
  // One running rank: its process, the threads copying its output, its exit status.
  struct Rank {
    int rank = 0;
    std::unique_ptr<bp::child> child;
    bp::ipstream out, err;
    std::thread out_reader, err_reader, waiter;
    std::deque<std::string> stderr_tail;  // last lines, for the failure summary
    std::optional<int> status;
  };

  // Why a generation ended badly: the first rank to fail, and how.
  struct Failure {
    enum class Cause { kExited, kHung, kRendezvousTimeout };
    Cause cause = Cause::kExited;
    int rank = 0;
    std::string detail;  // for kHung / kRendezvousTimeout
  };

  JobOptions options;
  Console console;
  RendezvousServer server;
  std::mutex mutex;
  std::condition_variable changed;
  std::vector<std::unique_ptr<Rank>> ranks;  // the current generation's
  std::optional<Failure> failure;            // the current generation's first
  bool stopping = false;                     // ranks exiting now were stopped by us
  std::optional<int> stop_signal;
  bool kill_now = false;

  explicit Impl(JobOptions job) : options(std::move(job)) {
    if (options.job_id.empty()) options.job_id = unique_job_id();
    // A quarter of the timeout: a rank frozen whole is seen at most that late. Without hang
    // detection, heartbeats only show progress in the logs; once in 30 s is plenty.
    const milliseconds interval = options.heartbeat_timeout.count() == 0
                                      ? milliseconds(30000)
                                      : std::clamp(options.heartbeat_timeout / 4, milliseconds(50), milliseconds(30000));
    server.service().start_job(options.job_id, options.nproc_per_node,
                               {.rdzv_timeout = options.rdzv_timeout, .heartbeat_interval = interval});
  }

  bp::environment rank_environment(int rank, int generation, int port) {
    bp::environment env = boost::this_process::environment();
    const std::map<std::string, std::string> values = {
        {"RANK", std::to_string(rank)},
        {"LOCAL_RANK", std::to_string(rank)},
        {"WORLD_SIZE", std::to_string(options.nproc_per_node)},
        {"LOCAL_WORLD_SIZE", std::to_string(options.nproc_per_node)},
        {"GROUP_RANK", "0"},
        {"NODE_RANK", "0"},
        {"MASTER_ADDR", "127.0.0.1"},
        {"MASTER_PORT", std::to_string(port)},
        {"FABRICD_ENDPOINT", server.endpoint()},
        {"FABRICD_JOB_ID", options.job_id},
        {"FABRICD_RESTART_COUNT", std::to_string(generation)},
        {"FABRICD_MAX_RESTARTS", std::to_string(options.max_restarts)},
    };
    for (const auto& [name, value] : values) env[name] = value;
    for (const auto& [name, value] : options.env) env[name] = value;
    return env;
  }

  bool on_console(int rank) const {
    return options.console_ranks.empty() ||
           std::find(options.console_ranks.begin(), options.console_ranks.end(), rank) != options.console_ranks.end();
  }

  void pump(Rank& rank, bp::ipstream& stream, bool error) {
    const StreamRouting& routing = error ? options.stderr_routing : options.stdout_routing;
    std::ofstream log;
    if (routing.file) {
      log.open(options.log_dir + "/rank_" + std::to_string(rank.rank) + (error ? ".stderr.log" : ".stdout.log"),
               std::ios::app);
    }
    const bool to_console = routing.console && on_console(rank.rank);
    for (std::string line; std::getline(stream, line);) {
      if (to_console) console.line(rank.rank, line, error);
      if (log) log << line << '\n' << std::flush;
      if (error) {
        std::lock_guard lock(mutex);
        rank.stderr_tail.push_back(line);
        if (rank.stderr_tail.size() > 10) rank.stderr_tail.pop_front();
      }
    }
  }

  void start_generation(int generation) {
    std::lock_guard lock(mutex);  // request_stop() may look at `ranks` from the signal thread
    failure.reset();
    stopping = false;
    const int port = free_port();
    const pid_t fabricd = ::getpid();
    for (int r = 0; r < options.nproc_per_node; ++r) {
      auto rank = std::make_unique<Rank>();
      rank->rank = r;
      rank->child = std::make_unique<bp::child>(
          bp::exe = options.program, bp::args = options.args, rank_environment(r, generation, port),
          bp::std_out > rank->out, bp::std_err > rank->err,
          bp::extend::on_exec_setup = [fabricd](auto&) {
            sigset_t none;                         // fabricd blocks SIGINT/SIGTERM for its signal
            sigemptyset(&none);                    // thread; the rank must receive them
            ::sigprocmask(SIG_SETMASK, &none, nullptr);
            ::setpgid(0, 0);                       // its own group: stopping it stops its children too
            ::prctl(PR_SET_PDEATHSIG, SIGKILL);    // dies with fabricd, even if fabricd is SIGKILLed
            if (::getppid() != fabricd) ::_exit(137);
          });
      Rank& self = *rank;
      rank->out_reader = std::thread([this, &self] { pump(self, self.out, false); });
      rank->err_reader = std::thread([this, &self] { pump(self, self.err, true); });
      rank->waiter = std::thread([this, &self] {
        self.child->wait();
        const int native = self.child->native_exit_code();
        const int status = WIFSIGNALED(native) ? 128 + WTERMSIG(native) : WEXITSTATUS(native);
        std::lock_guard lock(mutex);
        self.status = status;
        if (status != 0 && !failure && !stopping) failure = Failure{.rank = self.rank};
        changed.notify_all();
      });
      ranks.push_back(std::move(rank));
    }
  }

  void signal_group(Rank& rank, int signal) {
    if (!rank.status) ::kill(-rank.child->id(), signal);
  }
  void signal_groups(int signal) {
    for (auto& rank : ranks) signal_group(*rank, signal);
  }

  bool all_exited() const {
    return std::all_of(ranks.begin(), ranks.end(), [](const auto& r) { return r->status.has_value(); });
  }

  // A rank that heartbeated and then went silent for heartbeat_timeout is hung: it is
  // killed at once (it could not act on SIGTERM) and becomes the generation's failure.
  void check_heartbeats() {
    if (options.heartbeat_timeout.count() == 0) return;
    const auto now = Clock::now();
    for (auto& rank : ranks) {
      if (rank->status) continue;
      const auto beat = server.service().last_heartbeat(options.job_id, rank->rank);
      if (!beat) continue;
      const auto silent = std::chrono::duration_cast<milliseconds>(now - beat->last_progress);
      if (silent < options.heartbeat_timeout) continue;
      failure = Failure{.cause = Failure::Cause::kHung,
                        .rank = rank->rank,
                        .detail = "hung: no progress for " + seconds(silent) + " (timeout " +
                                  seconds(options.heartbeat_timeout) + "), last seen " + where(*beat)};
      console.say("rank " + std::to_string(rank->rank) + " " + failure->detail + "; killing it");
      signal_group(*rank, SIGKILL);
      return;
    }
  }

  // Some ranks reached the rendezvous and the rest did not come within rdzv_timeout.
  void check_rendezvous() {
    const auto joined = server.service().joined_ranks(options.job_id);
    if (joined.empty() || static_cast<int>(joined.size()) == options.nproc_per_node) return;
    auto first = std::min_element(joined.begin(), joined.end(),
                                  [](const auto& a, const auto& b) { return a.second < b.second; });
    if (Clock::now() - first->second < options.rdzv_timeout) return;
    std::string missing;
    int first_missing = -1;
    for (int r = 0; r < options.nproc_per_node; ++r) {
      if (joined.count(r)) continue;
      if (first_missing < 0) first_missing = r;
      missing += (missing.empty() ? "" : ", ") + std::to_string(r);
    }
    failure = Failure{.cause = Failure::Cause::kRendezvousTimeout,
                      .rank = first_missing,
                      .detail = "the rendezvous timed out after " + seconds(options.rdzv_timeout) + ": rank(s) " +
                                missing + " never joined (raise --rdzv-timeout if they are just slow to start)"};
  }

  // Waits until the generation succeeds, fails, or fabricd is told to stop.
  void supervise(std::unique_lock<std::mutex>& lock) {
    while (!(all_exited() || failure || stop_signal)) {
      check_heartbeats();
      if (!failure) check_rendezvous();
      changed.wait_for(lock, kWatchInterval);
    }
  }

  // SIGTERM to every group still running, up to the grace period, then SIGKILL.
  void stop_all(std::unique_lock<std::mutex>& lock) {
    stopping = true;
    signal_groups(kill_now ? SIGKILL : SIGTERM);
    if (!changed.wait_for(lock, options.grace_period, [&] { return all_exited() || kill_now; })) {
      console.say("ranks still running " + seconds(options.grace_period) + " after SIGTERM: SIGKILL");
    }
    signal_groups(SIGKILL);
    changed.wait(lock, [&] { return all_exited(); });
  }

  void join_generation() {
    for (auto& rank : ranks) {
      rank->waiter.join();
      rank->out_reader.join();
      rank->err_reader.join();
    }
    ranks.clear();
  }

  // "job failed: rank 1 failed first, with signal 9 (hung: ...)", then what it reported and
  // its last stderr lines.
  std::string failure_summary(const Failure& first, int status, int generation) {
    std::string summary = "job failed: rank " + std::to_string(first.rank) + " failed first, with " +
                          describe(status) + (first.detail.empty() ? "" : " (" + first.detail + ")") +
                          (options.max_restarts > 0 ? " after " + std::to_string(generation) + " restart(s)" : "");
    const auto errors = server.service().reported_errors(options.job_id);
    if (auto error = errors.find(first.rank); error != errors.end()) {
      summary += "\n  it reported " + error->second.error_type() + ": " + error->second.message().substr(0, 2000);
      if (error->second.has_step()) summary += "\n  at step " + std::to_string(error->second.step());
    }
    const auto& tail = ranks[first.rank]->stderr_tail;
    if (!tail.empty()) {
      summary += "\n  its last stderr lines:";
      for (const auto& line : tail) summary += "\n    " + line;
    }
    return summary;
  }

  int run() {
    for (int generation = 0;; ++generation) {
      if (generation > 0) server.service().begin_generation(options.job_id, generation);
      try {
        start_generation(generation);
      } catch (const std::exception& error) {  // e.g. execve refused the program
        console.say("cannot start " + options.program + ": " + error.what());
        std::unique_lock lock(mutex);
        kill_now = true;
        stop_all(lock);
        lock.unlock();
        join_generation();
        return kCannotStart;
      }
      std::unique_lock lock(mutex);
      supervise(lock);
      if (stop_signal && !failure) {
        console.say("stopping the job (signal " + std::to_string(*stop_signal) + ")");
        stop_all(lock);
        lock.unlock();
        join_generation();
        return 128 + *stop_signal;
      }
      if (!failure) {
        lock.unlock();
        join_generation();
        return 0;
      }
      const Failure first = *failure;
      if (first.cause == Failure::Cause::kRendezvousTimeout) {
        console.say(first.detail);
        stop_all(lock);
        lock.unlock();
        join_generation();
        return kRendezvousTimeout;
      }
      if (first.cause == Failure::Cause::kExited) {
        console.say("rank " + std::to_string(first.rank) + " failed with " + describe(*ranks[first.rank]->status) +
                    "; stopping the other ranks");
      }
      stop_all(lock);
      const int status = *ranks[first.rank]->status;
      const std::string summary = failure_summary(first, status, generation);
      lock.unlock();
      join_generation();
      if (generation < options.max_restarts && !stop_signal) {
        console.say("restarting the job: generation " + std::to_string(generation + 1) + " of at most " +
                    std::to_string(options.max_restarts + 1));
        continue;
      }
      console.say(summary);
      return status;
    }
  }
};

Supervisor::Supervisor(JobOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}
Supervisor::~Supervisor() = default;

int Supervisor::run() { return impl_->run(); }

void Supervisor::request_stop(int signal, bool immediately) {
  std::lock_guard lock(impl_->mutex);
  impl_->stop_signal = signal;
  impl_->server.service().request_stop(impl_->options.job_id,
                                       std::string("fabricd received ") + strsignal(signal));
  if (immediately) {
    impl_->kill_now = true;
    impl_->signal_groups(SIGKILL);
  }
  impl_->changed.notify_all();
}

}  // namespace fabric::launcher
