#include "ranks/rank_group.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <system_error>
#include <thread>
#include <vector>

#include "ranks/standby_pool.h"
#include "ranks/zygote.h"

namespace fabric::launcher {

struct RankGroup::Process {
  RankProcess spec;
  StartedProcess started;
  Zygote* forked_from = nullptr;  // when the zygote forked it (and reports its exit)
  std::thread out_reader, err_reader, waiter;
  std::optional<int> status;  // guarded by RankGroup::mutex_
  int open_streams = 2;       // guarded by RankGroup::mutex_; readers count down at EOF
};

namespace {

// How long a rank's exit waits for its output to drain (see wait_for), and how long the
// destructor waits for pipes held open by processes the ranks left behind.
constexpr std::chrono::milliseconds kOutputDrain{500};

// Reads `fd` line by line into the sink until EOF, or until `wake_fd` becomes readable (the
// group is going away and something the rank left behind still holds the pipe open).
void pump(LineSink& sink, int fd, int wake_fd, const RankProcess& rank, std::int32_t generation, bool is_stderr) {
  OutputLine line{.rank = rank.rank, .local_rank = rank.local_rank, .generation = generation, .is_stderr = is_stderr};
  std::string pending;
  char buffer[65536];
  pollfd fds[2] = {{.fd = fd, .events = POLLIN, .revents = 0}, {.fd = wake_fd, .events = POLLIN, .revents = 0}};
  for (;;) {
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (fds[0].revents != 0) {
      const ssize_t n = ::read(fd, buffer, sizeof(buffer));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      pending.append(buffer, static_cast<std::size_t>(n));
      for (std::size_t newline; (newline = pending.find('\n')) != std::string::npos;) {
        line.text.assign(pending, 0, newline);
        pending.erase(0, newline + 1);
        sink.write(line);
      }
      continue;
    }
    if (fds[1].revents != 0) break;
  }
  if (!pending.empty()) {  // a last line without its newline
    line.text = std::move(pending);
    sink.write(line);
  }
}

}  // namespace

RankGroup::RankGroup(RankGroupOptions options, LineSink& output, ExitCallback on_exit)
    : options_(std::move(options)), output_(output), on_exit_(std::move(on_exit)), wake_fd_(::eventfd(0, EFD_CLOEXEC)) {
  if (wake_fd_ < 0) throw SpawnError(126, "cannot start " + options_.program + ": eventfd failed");
  try {
    for (const RankProcess& rank : options_.ranks) spawn(rank);
  } catch (const std::exception& error) {
    tear_down();
    throw SpawnError(126, "cannot start " + options_.program + ": " + error.what());
  }
}

RankGroup::~RankGroup() { tear_down(); }

void RankGroup::tear_down() {
  kill();
  {
    std::unique_lock lock(mutex_);
    exited_.wait(lock, [&] { return all_exited_locked(); });
    // What a rank left behind outside its group (setsid) may hold its pipes open for ever:
    // its output is given a moment to drain, then the readers are told to stop.
    exited_.wait_for(lock, kOutputDrain, [&] {
      return std::all_of(processes_.begin(), processes_.end(), [](const auto& p) { return p->open_streams == 0; });
    });
  }
  const std::uint64_t one = 1;
  // Cannot fail on an eventfd far below its maximum count.
  [[maybe_unused]] const ssize_t woken = ::write(wake_fd_, &one, sizeof(one));
  for (auto& process : processes_) {
    process->waiter.join();
    process->out_reader.join();
    process->err_reader.join();
    close_descriptors(process->started);
  }
  ::close(wake_fd_);
}

void RankGroup::spawn(const RankProcess& rank) {
  if (options_.zygote) {
    if (std::optional<StartedProcess> forked = options_.zygote->fork_rank(rank.env)) {
      forked_ranks_.push_back(rank.rank);
      watch(rank, *forked, options_.zygote);
      return;
    }
  }
  if (options_.standbys) {
    if (std::optional<StartedProcess> warm = options_.standbys->take(rank.env)) {
      standby_ranks_.push_back(rank.rank);
      watch(rank, *warm);
      return;
    }
  }
  watch(rank, start_process({.program = options_.program,
                             .args = options_.args,
                             .working_dir = options_.working_dir,
                             .env = rank.env}));
}

void RankGroup::watch(const RankProcess& rank, StartedProcess started, Zygote* forked_from) {
  auto process = std::make_unique<Process>();
  process->spec = rank;
  process->started = started;
  process->forked_from = forked_from;
  Process& self = *process;
  {
    std::lock_guard lock(mutex_);
    processes_.push_back(std::move(process));
  }
  const auto reader = [this, &self](int fd, bool is_stderr) {
    pump(output_, fd, wake_fd_, self.spec, options_.generation, is_stderr);
    {
      std::lock_guard lock(mutex_);
      --self.open_streams;
    }
    exited_.notify_all();
  };
  self.out_reader = std::thread([reader, &self] { reader(self.started.out_fd, false); });
  self.err_reader = std::thread([reader, &self] { reader(self.started.err_fd, true); });
  self.waiter = std::thread([this, &self] { wait_for(self); });
}

void RankGroup::wait_for(Process& process) {
  const pid_t pid = process.started.pid;
  int status = 0;
  if (process.forked_from) {
    status = process.forked_from->wait(pid);  // the zygote's child, not ours: it reaps it
  } else {
    int native = 0;
    while (::waitpid(pid, &native, 0) < 0 && errno == EINTR) {
    }
    status = WIFSIGNALED(native) ? 128 + WTERMSIG(native) : WEXITSTATUS(native);
  }
  // What the rank left in its process group dies with it, now: the group id cannot be
  // reused while any member lives, and once the group is empty nothing can be hit. Later,
  // after the id may have been recycled, only the groups of live ranks are signalled.
  ::kill(-pid, SIGKILL);
  {
    std::unique_lock lock(mutex_);
    process.status = status;
    exited_.notify_all();
    // Its last lines (the ones that say why it died) reach the sinks before its exit is
    // reported, unless a child it left behind still holds its pipes open.
    exited_.wait_for(lock, kOutputDrain, [&] { return process.open_streams == 0; });
  }
  if (on_exit_) {
    on_exit_(RankEnded{.rank = process.spec.rank,
                       .local_rank = process.spec.local_rank,
                       .generation = options_.generation,
                       .status = status});
  }
}

void RankGroup::signal_all(int signal) {
  std::lock_guard lock(mutex_);
  for (auto& process : processes_) {
    if (!process->status) ::kill(-process->started.pid, signal);
  }
}

void RankGroup::signal_rank(std::int32_t rank, int signal) {
  std::lock_guard lock(mutex_);
  for (auto& process : processes_) {
    if (process->spec.rank == rank && !process->status) ::kill(-process->started.pid, signal);
  }
}

bool RankGroup::stop(std::chrono::milliseconds grace) {
  signal_all(SIGTERM);
  bool in_grace = false;
  {
    std::unique_lock lock(mutex_);
    in_grace = exited_.wait_for(lock, grace, [&] { return all_exited_locked() || kill_requested_; }) &&
               all_exited_locked();
  }
  if (!in_grace) kill();
  std::unique_lock lock(mutex_);
  exited_.wait(lock, [&] { return all_exited_locked(); });
  return in_grace;
}

void RankGroup::kill() {
  {
    std::lock_guard lock(mutex_);
    kill_requested_ = true;
  }
  signal_all(SIGKILL);
  exited_.notify_all();
}

bool RankGroup::all_exited() const {
  std::lock_guard lock(mutex_);
  return all_exited_locked();
}

bool RankGroup::all_exited_locked() const {
  return std::all_of(processes_.begin(), processes_.end(), [](const auto& p) { return p->status.has_value(); });
}

std::vector<std::int32_t> RankGroup::running() const {
  std::lock_guard lock(mutex_);
  std::vector<std::int32_t> ranks;
  for (const auto& process : processes_) {
    if (!process->status) ranks.push_back(process->spec.rank);
  }
  return ranks;
}

std::optional<pid_t> RankGroup::pid(std::int32_t rank) const {
  std::lock_guard lock(mutex_);
  for (const auto& process : processes_) {
    if (process->spec.rank == rank) return process->started.pid;
  }
  return std::nullopt;
}

std::optional<int> RankGroup::status(std::int32_t rank) const {
  std::lock_guard lock(mutex_);
  for (const auto& process : processes_) {
    if (process->spec.rank == rank) return process->status;
  }
  return std::nullopt;
}

}  // namespace fabric::launcher
