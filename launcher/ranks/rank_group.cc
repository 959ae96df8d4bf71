#include "ranks/rank_group.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <system_error>
#include <boost/process.hpp>
#include <boost/process/extend.hpp>
#include <sstream>
#include <thread>
#include <vector>

namespace bp = boost::process;

namespace fabric::launcher {

struct RankGroup::Process {
  RankProcess spec;
  std::unique_ptr<bp::child> child;
  pid_t pid = 0;
  int out_fd = -1, err_fd = -1;  // the read ends of its stdout and stderr pipes
  std::thread out_reader, err_reader, waiter;
  std::optional<int> status;  // guarded by RankGroup::mutex_
  int open_streams = 2;       // guarded by RankGroup::mutex_; readers count down at EOF
};

namespace {

// How long a rank's exit waits for its output to drain (see wait_for), and how long the
// destructor waits for pipes held open by processes the ranks left behind.
constexpr std::chrono::milliseconds kOutputDrain{500};

// A pipe whose ends close on exec, so that no other child inherits them.
std::array<int, 2> cloexec_pipe() {
  std::array<int, 2> fds{-1, -1};
  if (::pipe2(fds.data(), O_CLOEXEC) != 0) throw std::system_error(errno, std::generic_category(), "pipe2");
  return fds;
}

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

bool is_executable_file(const std::string& path) { return ::access(path.c_str(), X_OK) == 0; }

}  // namespace

std::string resolve_program(const std::string& program, const std::string& working_dir, const std::string& path) {
  if (program.empty()) throw SpawnError(127, "the program is empty; name the executable to run");
  std::string resolved = program;
  if (program.find('/') == std::string::npos) {
    std::istringstream dirs(path);
    for (std::string dir; std::getline(dirs, dir, ':');) {
      const std::string candidate = (dir.empty() ? "." : dir) + "/" + program;
      if (is_executable_file(candidate)) return candidate;
    }
    throw SpawnError(127, "program '" + program + "' not found in PATH");
  }
  if (program.front() != '/' && !working_dir.empty()) resolved = working_dir + "/" + program;
  if (::access(resolved.c_str(), F_OK) != 0) throw SpawnError(127, "program '" + resolved + "' does not exist");
  if (!is_executable_file(resolved)) {
    throw SpawnError(126, "program '" + resolved + "' is not executable (chmod +x it?)");
  }
  return resolved;
}

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
    ::close(process->out_fd);
    ::close(process->err_fd);
  }
  ::close(wake_fd_);
}

void RankGroup::spawn(const RankProcess& rank) {
  auto process = std::make_unique<Process>();
  process->spec = rank;
  // The rank's environment exactly as given, handed to execve as one envp that outlives the
  // spawn. Not Boost.Process's environment type: its lookup memcmp()s NAME= against every
  // entry for the length of NAME=, reading past the end of shorter ones (ASan sees it).
  std::vector<std::string> env_entries;
  env_entries.reserve(rank.env.size());
  for (const auto& [name, value] : rank.env) env_entries.push_back(std::string(name).append(1, '=').append(value));
  std::vector<char*> envp;
  envp.reserve(env_entries.size() + 1);
  for (std::string& entry : env_entries) envp.push_back(entry.data());
  envp.push_back(nullptr);
  auto env = bp::extend::on_setup = [&envp](auto& executor) { executor.env = envp.data(); };  // non-const, as Boost wants
  const std::array<int, 2> out = cloexec_pipe(), err = cloexec_pipe();
  process->out_fd = out[0];
  process->err_fd = err[0];
  const pid_t launcher = ::getpid();
  const auto setup = bp::extend::on_exec_setup = [launcher, out, err](auto&) {
    ::dup2(out[1], STDOUT_FILENO);  // dup2 clears close-on-exec on the copies
    ::dup2(err[1], STDERR_FILENO);
    sigset_t none;  // the launcher blocks SIGINT/SIGTERM for its signal thread; the rank must get them
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::setpgid(0, 0);                     // its own group: stopping it stops its children too
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // dies with the launcher, even if that is SIGKILLed
    if (::getppid() != launcher) ::_exit(137);
  };
  // A child whose execve failed is not reaped by Boost.Process: with an error_code (no
  // exception) its on_error handlers see the child's pid, and we reap it.
  pid_t failed = 0;
  auto on_error = bp::extend::on_error = [&failed](auto& executor, const std::error_code&) {
    if (executor.pid > 0) failed = executor.pid;
  };
  const auto close_write_ends = [&] {
    ::close(out[1]);
    ::close(err[1]);
  };
  std::error_code spawn_error;
  if (options_.working_dir.empty()) {
    process->child = std::make_unique<bp::child>(bp::exe = options_.program, bp::args = options_.args, env, setup,
                                                 on_error, spawn_error);
  } else {
    process->child = std::make_unique<bp::child>(bp::exe = options_.program, bp::args = options_.args, env,
                                                 bp::start_dir = options_.working_dir, setup, on_error, spawn_error);
  }
  if (spawn_error) {
    close_write_ends();
    ::close(out[0]);
    ::close(err[0]);
    if (failed > 0) ::waitpid(failed, nullptr, 0);
    throw std::system_error(spawn_error, "execve");
  }
  close_write_ends();  // the rank holds them now: EOF comes when it (and its children) are done
  process->pid = process->child->id();
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
  self.out_reader = std::thread([reader, &self] { reader(self.out_fd, false); });
  self.err_reader = std::thread([reader, &self] { reader(self.err_fd, true); });
  self.waiter = std::thread([this, &self] { wait_for(self); });
}

void RankGroup::wait_for(Process& process) {
  process.child->wait();
  // What the rank left in its process group dies with it, now: the group id cannot be
  // reused while any member lives, and once the group is empty nothing can be hit. Later,
  // after the id may have been recycled, only the groups of live ranks are signalled.
  ::kill(-process.pid, SIGKILL);
  const int native = process.child->native_exit_code();
  const int status = WIFSIGNALED(native) ? 128 + WTERMSIG(native) : WEXITSTATUS(native);
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
    if (!process->status) ::kill(-process->pid, signal);
  }
}

void RankGroup::signal_rank(std::int32_t rank, int signal) {
  std::lock_guard lock(mutex_);
  for (auto& process : processes_) {
    if (process->spec.rank == rank && !process->status) ::kill(-process->pid, signal);
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

std::optional<int> RankGroup::status(std::int32_t rank) const {
  std::lock_guard lock(mutex_);
  for (const auto& process : processes_) {
    if (process->spec.rank == rank) return process->status;
  }
  return std::nullopt;
}

}  // namespace fabric::launcher
