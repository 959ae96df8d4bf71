#include "ranks/rank_group.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <boost/process.hpp>
#include <boost/process/extend.hpp>
#include <sstream>
#include <thread>

namespace bp = boost::process;

namespace fabric::launcher {

struct RankGroup::Process {
  RankProcess spec;
  std::unique_ptr<bp::child> child;
  bp::ipstream out, err;
  std::thread out_reader, err_reader, waiter;
  std::optional<int> status;  // guarded by RankGroup::mutex_
  int open_streams = 2;       // guarded by RankGroup::mutex_; readers count down at EOF
};

namespace {

// How long a rank's exit waits for its output to drain (see wait_for).
constexpr std::chrono::milliseconds kOutputDrain{500};

void pump(LineSink& sink, bp::ipstream& stream, const RankProcess& rank, std::int32_t generation, bool is_stderr) {
  OutputLine line{.rank = rank.rank, .local_rank = rank.local_rank, .generation = generation, .is_stderr = is_stderr};
  while (std::getline(stream, line.text)) sink.write(line);
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
    : options_(std::move(options)), output_(output), on_exit_(std::move(on_exit)) {
  try {
    for (const RankProcess& rank : options_.ranks) spawn(rank);
  } catch (const std::exception& error) {
    kill();
    {
      std::unique_lock lock(mutex_);
      exited_.wait(lock, [&] { return all_exited_locked(); });
    }
    for (auto& process : processes_) {
      process->waiter.join();
      process->out_reader.join();
      process->err_reader.join();
    }
    throw SpawnError(126, "cannot start " + options_.program + ": " + error.what());
  }
}

RankGroup::~RankGroup() {
  kill();
  for (auto& process : processes_) {
    process->waiter.join();
    process->out_reader.join();
    process->err_reader.join();
  }
}

void RankGroup::spawn(const RankProcess& rank) {
  auto process = std::make_unique<Process>();
  process->spec = rank;
  bp::environment env;
  for (const auto& [name, value] : rank.env) env[name] = value;
  const pid_t launcher = ::getpid();
  const auto setup = bp::extend::on_exec_setup = [launcher](auto&) {
    sigset_t none;  // the launcher blocks SIGINT/SIGTERM for its signal thread; the rank must get them
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::setpgid(0, 0);                     // its own group: stopping it stops its children too
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // dies with the launcher, even if that is SIGKILLed
    if (::getppid() != launcher) ::_exit(137);
  };
  if (options_.working_dir.empty()) {
    process->child = std::make_unique<bp::child>(bp::exe = options_.program, bp::args = options_.args, env,
                                                 bp::std_out > process->out, bp::std_err > process->err, setup);
  } else {
    process->child = std::make_unique<bp::child>(bp::exe = options_.program, bp::args = options_.args, env,
                                                 bp::start_dir = options_.working_dir, bp::std_out > process->out,
                                                 bp::std_err > process->err, setup);
  }
  Process& self = *process;
  {
    std::lock_guard lock(mutex_);
    processes_.push_back(std::move(process));
  }
  const auto reader = [this, &self](bp::ipstream& stream, bool is_stderr) {
    pump(output_, stream, self.spec, options_.generation, is_stderr);
    {
      std::lock_guard lock(mutex_);
      --self.open_streams;
    }
    exited_.notify_all();
  };
  self.out_reader = std::thread([reader, &self] { reader(self.out, false); });
  self.err_reader = std::thread([reader, &self] { reader(self.err, true); });
  self.waiter = std::thread([this, &self] { wait_for(self); });
}

void RankGroup::wait_for(Process& process) {
  process.child->wait();
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
    if (!process->status) ::kill(-process->child->id(), signal);
  }
}

void RankGroup::signal_rank(std::int32_t rank, int signal) {
  std::lock_guard lock(mutex_);
  for (auto& process : processes_) {
    if (process->spec.rank == rank && !process->status) ::kill(-process->child->id(), signal);
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
