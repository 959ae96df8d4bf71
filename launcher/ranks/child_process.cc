#include "ranks/child_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <boost/process.hpp>
#include <boost/process/extend.hpp>
#include <cerrno>
#include <sstream>
#include <system_error>

namespace bp = boost::process;

namespace fabric::launcher {

namespace {

// A pipe whose ends close on exec, so that no other child inherits them.
std::array<int, 2> cloexec_pipe() {
  std::array<int, 2> fds{-1, -1};
  if (::pipe2(fds.data(), O_CLOEXEC) != 0) throw std::system_error(errno, std::generic_category(), "pipe2");
  return fds;
}

std::array<int, 2> cloexec_socket_pair(bool seqpacket) {
  std::array<int, 2> fds{-1, -1};
  if (::socketpair(AF_UNIX, (seqpacket ? SOCK_SEQPACKET : SOCK_STREAM) | SOCK_CLOEXEC, 0, fds.data()) != 0) {
    throw std::system_error(errno, std::generic_category(), "socketpair");
  }
  return fds;
}

// Moves `fd` to `target` in the child, open across execve.
void move_to(int fd, int target) {
  if (fd == target) {
    ::fcntl(target, F_SETFD, 0);  // dup2 onto itself would leave close-on-exec set
  } else {
    ::dup2(fd, target);  // dup2 clears close-on-exec on the copy
  }
}

bool is_executable_file(const std::string& path) { return ::access(path.c_str(), X_OK) == 0; }

}  // namespace

StartedProcess start_process(const ProcessSpec& spec) {
  // The environment exactly as given, handed to execve as one envp that outlives the spawn.
  // Not Boost.Process's environment type: its lookup memcmp()s NAME= against every entry for
  // the length of NAME=, reading past the end of shorter ones (ASan sees it).
  std::vector<std::string> env_entries;
  env_entries.reserve(spec.env.size());
  for (const auto& [name, value] : spec.env) env_entries.push_back(std::string(name).append(1, '=').append(value));
  std::vector<char*> envp;
  envp.reserve(env_entries.size() + 1);
  for (std::string& entry : env_entries) envp.push_back(entry.data());
  envp.push_back(nullptr);
  auto env = bp::extend::on_setup = [&envp](auto& executor) { executor.env = envp.data(); };  // non-const, as Boost wants
  const std::array<int, 2> out = cloexec_pipe(), err = cloexec_pipe();
  std::array<int, 2> control{-1, -1};
  if (spec.control_fd >= 0) control = cloexec_socket_pair(spec.control_seqpacket);
  const int control_target = spec.control_fd;
  const pid_t launcher = ::getpid();
  const auto setup = bp::extend::on_exec_setup = [launcher, out, err, control, control_target](auto&) {
    move_to(out[1], STDOUT_FILENO);
    move_to(err[1], STDERR_FILENO);
    if (control_target >= 0) move_to(control[1], control_target);
    sigset_t none;  // the launcher blocks SIGINT/SIGTERM for its signal thread; the child must get them
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
  const auto close_child_ends = [&] {
    ::close(out[1]);
    ::close(err[1]);
    if (control[1] >= 0) ::close(control[1]);
  };
  std::error_code spawn_error;
  std::unique_ptr<bp::child> child;
  if (spec.working_dir.empty()) {
    child = std::make_unique<bp::child>(bp::exe = spec.program, bp::args = spec.args, env, setup, on_error, spawn_error);
  } else {
    child = std::make_unique<bp::child>(bp::exe = spec.program, bp::args = spec.args, env,
                                        bp::start_dir = spec.working_dir, setup, on_error, spawn_error);
  }
  close_child_ends();  // the child holds them now
  if (spawn_error) {
    ::close(out[0]);
    ::close(err[0]);
    if (control[0] >= 0) ::close(control[0]);
    if (failed > 0) ::waitpid(failed, nullptr, 0);
    throw std::system_error(spawn_error, "execve");
  }
  const pid_t pid = child->id();
  child->detach();  // its owner waits for it (waitpid), for as long as it takes
  return StartedProcess{.pid = pid, .out_fd = out[0], .err_fd = err[0], .control_fd = control[0]};
}

void close_descriptors(StartedProcess& process) {
  for (int* fd : {&process.out_fd, &process.err_fd, &process.control_fd}) {
    if (*fd >= 0) ::close(*fd);
    *fd = -1;
  }
}

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

}  // namespace fabric::launcher
