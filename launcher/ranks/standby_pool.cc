#include "ranks/standby_pool.h"

#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "fabric/worker/standby.h"

namespace fabric::launcher {

namespace {

// Sends all of `message` on a stream socket; false when the peer is gone.
bool send_all(int fd, const std::string& message) {
  std::size_t sent = 0;
  while (sent < message.size()) {
    const ssize_t n = ::send(fd, message.data() + sent, message.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    sent += static_cast<std::size_t>(n);
  }
  return true;
}

void kill_and_reap(StartedProcess& process) {
  ::kill(-process.pid, SIGKILL);  // its group: a standby has started nothing, but be sure
  while (::waitpid(process.pid, nullptr, 0) < 0 && errno == EINTR) {
  }
  close_descriptors(process);
}

}  // namespace

StandbyPool::StandbyPool(ProcessSpec spec) : spec_(std::move(spec)) {
  spec_.control_fd = worker::kStandbyControlFd;
  spec_.env[worker::kStandbyFdVariable] = std::to_string(worker::kStandbyControlFd);
}

StandbyPool::~StandbyPool() {
  std::lock_guard lock(mutex_);
  for (Standby& standby : waiting_) release(standby);
}

// Closing its socket tells a standby to go; one that has not reached its wait yet (still
// loading) would only see it there, so it is SIGKILLed too.
void StandbyPool::release(Standby& standby) {
  ::close(standby.process.control_fd);
  standby.process.control_fd = -1;
  kill_and_reap(standby.process);
}

void StandbyPool::fill(std::size_t count) {
  std::lock_guard lock(mutex_);
  while (waiting_.size() < count) {
    try {
      waiting_.push_back(Standby{.process = start_process(spec_)});
    } catch (const std::system_error& error) {
      throw SpawnError(126, "cannot start a standby of " + spec_.program + ": " + error.what());
    }
  }
}

std::optional<StartedProcess> StandbyPool::take(const std::map<std::string, std::string>& env) {
  const std::string assignment = worker::encode_assignment(env);
  std::lock_guard lock(mutex_);
  while (!waiting_.empty()) {
    Standby standby = std::move(waiting_.front());
    waiting_.erase(waiting_.begin());
    // Shut our side once sent: the standby reads its assignment to the end of the stream.
    if (send_all(standby.process.control_fd, assignment) && ::shutdown(standby.process.control_fd, SHUT_WR) == 0) {
      poll_ready(standby);  // a byte left unread would make the close reset the stream
      ::close(standby.process.control_fd);
      standby.process.control_fd = -1;
      return standby.process;
    }
    kill_and_reap(standby.process);  // it died waiting: the next one
  }
  return std::nullopt;
}

std::size_t StandbyPool::size() const {
  std::lock_guard lock(mutex_);
  return waiting_.size();
}

std::size_t StandbyPool::ready() {
  std::lock_guard lock(mutex_);
  std::size_t count = 0;
  for (Standby& standby : waiting_) count += poll_ready(standby) ? 1 : 0;
  return count;
}

std::vector<pid_t> StandbyPool::pids() const {
  std::lock_guard lock(mutex_);
  std::vector<pid_t> pids;
  for (const Standby& standby : waiting_) pids.push_back(standby.process.pid);
  return pids;
}

bool StandbyPool::poll_ready(Standby& standby) {
  if (standby.ready) return true;
  char byte = 0;
  const ssize_t n = ::recv(standby.process.control_fd, &byte, 1, MSG_DONTWAIT);
  standby.ready = n == 1 && byte == worker::kStandbyReady;
  return standby.ready;
}

}  // namespace fabric::launcher
