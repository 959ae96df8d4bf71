// Starting one process of a job, the way every rank is started: its own process group
// (stopping it stops its children too), a parent-death signal (it dies with the launcher,
// even one killed with SIGKILL), the launcher's blocked stop signals unblocked, its exact
// environment, and its stdout and stderr on pipes the caller reads. Shared by RankGroup
// (a rank started for its generation) and StandbyPool (a process started ahead of a
// restart, given its rank later through its control socket).
#pragma once

#include <sys/types.h>

#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace fabric::launcher {

// The program could not be started: `status` is 127 (not found) or 126 (cannot execute).
class SpawnError : public std::runtime_error {
 public:
  SpawnError(int status, const std::string& message) : std::runtime_error(message), status_(status) {}
  int status() const { return status_; }

 private:
  int status_;
};

struct ProcessSpec {
  std::string program;  // an absolute path, or one relative to working_dir
  std::vector<std::string> args;
  std::string working_dir;  // "" = the launcher's
  // Its whole environment (the launcher's own is not inherited implicitly).
  std::map<std::string, std::string> env;
  // Give it one end of a socket pair as this descriptor number (kStandbyControlFd); -1: none.
  int control_fd = -1;
  bool control_seqpacket = false;  // SOCK_SEQPACKET (a zygote's), else SOCK_STREAM
};

// A started process, owned by whoever holds this: it must be waited for (waitpid) and its
// descriptors closed. The pipes' write ends are closed here (the child holds them), so
// EOF comes when the process and its children are done.
struct StartedProcess {
  pid_t pid = 0;
  int out_fd = -1, err_fd = -1;  // the read ends of its stdout and stderr pipes
  int control_fd = -1;           // our end of its control socket, when it has one
};

// Throws std::system_error when the process cannot be started (execve refused it).
StartedProcess start_process(const ProcessSpec& spec);

// Closes what `process` holds open (not the process: see StandbyPool and RankGroup).
void close_descriptors(StartedProcess& process);

// Resolves a program as execve would be asked to run it: a name without a slash is looked
// up in PATH, a relative path against working_dir. SpawnError (127/126) when it does not
// exist or is not executable.
std::string resolve_program(const std::string& program, const std::string& working_dir, const std::string& path);

}  // namespace fabric::launcher
