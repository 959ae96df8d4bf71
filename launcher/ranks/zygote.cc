#include "ranks/zygote.h"

#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cerrno>
#include <cstring>
#include <iostream>
#include <system_error>

#include "fabric/worker/standby.h"

namespace fabric::launcher {

namespace {

// How long the zygote may take to load before its first fork, or to answer one.
constexpr std::chrono::seconds kPatience{120};

std::array<int, 2> cloexec_pipe() {
  std::array<int, 2> fds{-1, -1};
  if (::pipe2(fds.data(), O_CLOEXEC) != 0) throw std::system_error(errno, std::generic_category(), "pipe2");
  return fds;
}

// One request: the environment, with the rank's stdout and stderr write ends.
bool send_request(int fd, const std::string& env, int out, int err) {
  iovec data{.iov_base = const_cast<char*>(env.data()), .iov_len = env.size()};
  alignas(cmsghdr) char control[CMSG_SPACE(2 * sizeof(int))] = {};
  msghdr message{};
  message.msg_iov = &data;
  message.msg_iovlen = 1;
  message.msg_control = control;
  message.msg_controllen = sizeof(control);
  cmsghdr* header = CMSG_FIRSTHDR(&message);
  header->cmsg_level = SOL_SOCKET;
  header->cmsg_type = SCM_RIGHTS;
  header->cmsg_len = CMSG_LEN(2 * sizeof(int));
  const int fds[2] = {out, err};
  std::memcpy(CMSG_DATA(header), fds, sizeof(fds));
  ssize_t sent;
  while ((sent = ::sendmsg(fd, &message, MSG_NOSIGNAL)) < 0 && errno == EINTR) {
  }
  return sent == static_cast<ssize_t>(env.size());
}

}  // namespace

bool has_standby_hook(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  struct stat info {};
  bool found = false;
  if (::fstat(fd, &info) == 0 && info.st_size > 0) {
    const auto size = static_cast<std::size_t>(info.st_size);
    void* bytes = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (bytes != MAP_FAILED) {
      // The hook's own variable name, in the program's read-only data: libfabric is linked
      // statically, so a program that has the hook has this string in its file.
      const std::string needle = std::string(worker::kZygoteFdVariable) + '\0';
      found = ::memmem(bytes, size, needle.data(), needle.size()) != nullptr;
      ::munmap(bytes, size);
    }
  }
  ::close(fd);
  return found;
}

Zygote::Zygote(ProcessSpec spec) {
  spec.control_fd = worker::kStandbyControlFd;
  spec.control_seqpacket = true;
  spec.env[worker::kZygoteFdVariable] = std::to_string(worker::kStandbyControlFd);
  try {
    process_ = start_process(spec);
  } catch (const std::system_error& error) {
    throw SpawnError(126, "cannot start a zygote of " + spec.program + ": " + error.what());
  }
  reader_ = std::thread([this] { read_records(); });
  output_ = std::thread([this] { forward_output(); });
}

Zygote::~Zygote() {
  ::shutdown(process_.control_fd, SHUT_RDWR);  // it kills what is left of its ranks, and exits
  reader_.join();
  while (::waitpid(process_.pid, nullptr, 0) < 0 && errno == EINTR) {
  }
  output_.join();
  close_descriptors(process_);
}

// What the zygote says: its readiness (or refusal), each fork's outcome, each rank's exit.
void Zygote::read_records() {
  for (;;) {
    worker::ZygoteRecord record;
    const ssize_t n = ::recv(process_.control_fd, &record, sizeof(record), 0);
    if (n < 0 && errno == EINTR) continue;
    std::lock_guard lock(mutex_);
    if (n != static_cast<ssize_t>(sizeof(record))) {
      gone_ = true;
      if (refusal_.empty()) refusal_ = "it exited";
      changed_.notify_all();
      return;
    }
    switch (record.kind) {
      case worker::kZygoteReady:
        ready_ = true;
        break;
      case worker::kZygoteRefused:
        refusal_ = record.value == 0 ? std::string("the job's environment sets ") + worker::kNoZygoteVariable + "=1"
                                     : "its libraries started " + std::to_string(record.value) +
                                           " threads before main(), and a fork would copy their locks but not them";
        break;
      case worker::kZygoteForked:
        fork_replies_.emplace_back(record.kind, record.pid);
        break;
      case worker::kZygoteForkFailed:
        fork_replies_.emplace_back(record.kind, record.value);
        break;
      case worker::kZygoteExited:
        exits_[record.pid] = record.value;
        break;
      default:
        break;
    }
    changed_.notify_all();
  }
}

// The zygote prints only its own failures; they go to fabricd's stderr as they are.
void Zygote::forward_output() {
  char buffer[4096];
  for (const int fd : {process_.err_fd, process_.out_fd}) {
    for (ssize_t n; (n = ::read(fd, buffer, sizeof(buffer))) != 0;) {
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) break;
      std::cerr.write(buffer, n);
    }
  }
}

std::optional<StartedProcess> Zygote::fork_rank(const std::map<std::string, std::string>& env) {
  std::unique_lock lock(mutex_);
  if (gone_ || !refusal_.empty()) return std::nullopt;
  const std::array<int, 2> out = cloexec_pipe(), err = cloexec_pipe();
  const auto close_all = [&] {
    for (const int fd : {out[0], out[1], err[0], err[1]}) ::close(fd);
  };
  // One request at a time (the lock), so the next fork reply is this one's.
  if (!send_request(process_.control_fd, worker::encode_assignment(env), out[1], err[1])) {
    close_all();
    return std::nullopt;
  }
  ::close(out[1]);  // the zygote has its copies, and the rank will
  ::close(err[1]);
  // It answers once loaded (a second or so); one that never does is stuck, and let go.
  if (!changed_.wait_for(lock, kPatience, [&] { return !fork_replies_.empty() || gone_; })) {
    refusal_ = "it did not answer within " + std::to_string(kPatience.count()) + " s";
    ::kill(process_.pid, SIGKILL);
  }
  if (fork_replies_.empty()) {
    ::close(out[0]);
    ::close(err[0]);
    return std::nullopt;
  }
  const auto [kind, value] = fork_replies_.front();
  fork_replies_.pop_front();
  if (kind != worker::kZygoteForked) {
    std::cerr << "fabricd: the zygote could not fork a rank: " << ::strerror(value) << std::endl;
    ::close(out[0]);
    ::close(err[0]);
    return std::nullopt;
  }
  return StartedProcess{.pid = value, .out_fd = out[0], .err_fd = err[0]};
}

int Zygote::wait(pid_t pid) {
  std::unique_lock lock(mutex_);
  changed_.wait(lock, [&] { return exits_.count(pid) > 0 || gone_; });
  const auto exit = exits_.find(pid);
  if (exit == exits_.end()) return 128 + SIGKILL;  // the zygote died, and its ranks with it
  const int status = exit->second;
  exits_.erase(exit);
  return status;
}

std::string Zygote::refusal() {
  std::lock_guard lock(mutex_);
  return refusal_;
}

bool Zygote::serving() {
  std::unique_lock lock(mutex_);
  changed_.wait(lock, [&] { return ready_ || gone_ || !refusal_.empty(); });
  return ready_ && !gone_ && refusal_.empty();
}

}  // namespace fabric::launcher
