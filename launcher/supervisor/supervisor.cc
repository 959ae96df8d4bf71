#include "supervisor/supervisor.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/process.hpp>
#include <boost/process/extend.hpp>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <fstream>
#include <iostream>
#include <mutex>
#include <optional>
#include <thread>

namespace bp = boost::process;

namespace fabric::launcher {
namespace {

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

constexpr int kCannotStart = 126;  // as a shell answers for a program it cannot execute

std::string describe(int status) {
  if (status > 128) return "signal " + std::to_string(status - 128) + " (" + strsignal(status - 128) + ")";
  return "exit code " + std::to_string(status);
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

  JobOptions options;
  Console console;
  std::mutex mutex;
  std::condition_variable changed;
  std::vector<std::unique_ptr<Rank>> ranks;
  std::vector<int> exit_order;  // ranks in the order they exited
  std::optional<int> stop_signal;
  bool kill_now = false;

  explicit Impl(JobOptions job) : options(std::move(job)) {}

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

  void pump(Rank& rank, bp::ipstream& stream, bool error, const std::string& log_path) {
    std::ofstream log;
    if (!log_path.empty()) log.open(log_path, std::ios::app);
    for (std::string line; std::getline(stream, line);) {
      if (on_console(rank.rank)) console.line(rank.rank, line, error);
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
      const std::string prefix = options.log_dir.empty() ? "" : options.log_dir + "/rank_" + std::to_string(r);
      Rank& self = *rank;
      rank->out_reader = std::thread([this, &self, prefix] { pump(self, self.out, false, prefix.empty() ? "" : prefix + ".stdout.log"); });
      rank->err_reader = std::thread([this, &self, prefix] { pump(self, self.err, true, prefix.empty() ? "" : prefix + ".stderr.log"); });
      rank->waiter = std::thread([this, &self] {
        self.child->wait();
        const int native = self.child->native_exit_code();
        const int status = WIFSIGNALED(native) ? 128 + WTERMSIG(native) : WEXITSTATUS(native);
        std::lock_guard lock(mutex);
        self.status = status;
        exit_order.push_back(self.rank);
        changed.notify_all();
      });
      ranks.push_back(std::move(rank));
    }
  }

  void signal_groups(int signal) {
    for (auto& rank : ranks) {
      if (!rank->status) ::kill(-rank->child->id(), signal);
    }
  }

  bool all_exited() const {
    return std::all_of(ranks.begin(), ranks.end(), [](const auto& r) { return r->status.has_value(); });
  }

  // SIGTERM to every group still running, up to the grace period, then SIGKILL.
  void stop_all(std::unique_lock<std::mutex>& lock) {
    signal_groups(kill_now ? SIGKILL : SIGTERM);
    if (!changed.wait_for(lock, options.grace_period, [&] { return all_exited() || kill_now; })) {
      console.say("ranks still running " + std::to_string(options.grace_period.count()) + " ms after SIGTERM: SIGKILL");
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
    exit_order.clear();
  }

  int run() {
    for (int generation = 0;; ++generation) {
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
      auto failed = [&]() -> std::optional<int> {
        for (int r : exit_order) {
          if (*ranks[r]->status != 0) return r;
        }
        return std::nullopt;
      };
      changed.wait(lock, [&] { return all_exited() || failed() || stop_signal; });
      if (stop_signal && !failed()) {
        console.say("stopping the job (signal " + std::to_string(*stop_signal) + ")");
        stop_all(lock);
        lock.unlock();
        join_generation();
        return 128 + *stop_signal;
      }
      if (!failed()) {
        lock.unlock();
        join_generation();
        return 0;
      }
      const int first = *failed();
      const int status = *ranks[first]->status;
      console.say("rank " + std::to_string(first) + " failed with " + describe(status) + "; stopping the other ranks");
      stop_all(lock);
      std::deque<std::string> tail = ranks[first]->stderr_tail;
      lock.unlock();
      join_generation();
      if (generation < options.max_restarts && !stop_signal) {
        console.say("restarting the job: generation " + std::to_string(generation + 1) + " of at most " +
                    std::to_string(options.max_restarts + 1));
        continue;
      }
      std::string summary = "job failed: rank " + std::to_string(first) + " failed first, with " + describe(status) +
                            (options.max_restarts > 0 ? " (after " + std::to_string(generation) + " restart(s))" : "");
      if (!tail.empty()) {
        summary += "; its last stderr lines:";
        for (const auto& line : tail) summary += "\n    " + line;
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
  if (immediately) {
    impl_->kill_now = true;
    impl_->signal_groups(SIGKILL);
  }
  impl_->changed.notify_all();
}

}  // namespace fabric::launcher
