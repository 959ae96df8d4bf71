#include "ranks/zygote.h"

#include <elf.h>
#include <fcntl.h>
#include <poll.h>
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

// Whether the ELF image `bytes` has a section named `wanted`.
bool has_section(const unsigned char* bytes, std::size_t size, const std::string& wanted) {
  if (size < sizeof(Elf64_Ehdr) || std::memcmp(bytes, ELFMAG, SELFMAG) != 0 || bytes[EI_CLASS] != ELFCLASS64) {
    return false;
  }
  Elf64_Ehdr header;
  std::memcpy(&header, bytes, sizeof(header));
  const std::size_t table_end = header.e_shoff + std::size_t{header.e_shnum} * sizeof(Elf64_Shdr);
  if (header.e_shentsize != sizeof(Elf64_Shdr) || header.e_shstrndx >= header.e_shnum || table_end > size) return false;
  const auto section = [&](std::size_t index) {
    Elf64_Shdr entry;
    std::memcpy(&entry, bytes + header.e_shoff + index * sizeof(Elf64_Shdr), sizeof(entry));
    return entry;
  };
  const Elf64_Shdr names = section(header.e_shstrndx);
  if (names.sh_offset + names.sh_size > size) return false;
  const char* strings = reinterpret_cast<const char*>(bytes + names.sh_offset);
  for (std::size_t i = 0; i < header.e_shnum; ++i) {
    const Elf64_Shdr entry = section(i);
    if (entry.sh_name >= names.sh_size) continue;
    const std::size_t room = names.sh_size - entry.sh_name;
    if (std::string(strings + entry.sh_name, strnlen(strings + entry.sh_name, room)) == wanted) return true;
  }
  return false;
}

}  // namespace

// A section name, not a string in the file: a launcher that includes standby.h has the
// hook's variable names in its data too, but only a program the hook was linked into has
// its section (worker/src/standby_hook.cc).
bool has_standby_hook(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  struct stat info {};
  bool found = false;
  if (::fstat(fd, &info) == 0 && info.st_size > 0) {
    const auto size = static_cast<std::size_t>(info.st_size);
    void* bytes = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (bytes != MAP_FAILED) {
      found = has_section(static_cast<const unsigned char*>(bytes), size, worker::kStandbyHookSection);
      ::munmap(bytes, size);
    }
  }
  ::close(fd);
  return found;
}

std::string without_standby_hook(const std::string& path) {
  return "--warm-standby: " + path + " is not linked with libfabric (it has no standby hook), so its ranks are "
         "started the usual way";
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
  {
    std::lock_guard lock(mutex_);
    closing_ = true;
  }
  ::shutdown(process_.control_fd, SHUT_RDWR);  // it kills what is left of its ranks, and exits
  reader_.join();  // it reaps the zygote
  output_.join();
  close_descriptors(process_);
}

// What the zygote says: its readiness (or refusal), each fork's outcome, each rank's exit.
// At the end of the stream the zygote has exited, or is about to: it is reaped here.
void Zygote::read_records() {
  for (;;) {
    worker::ZygoteRecord record;
    const ssize_t n = ::recv(process_.control_fd, &record, sizeof(record), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n != static_cast<ssize_t>(sizeof(record))) break;
    std::lock_guard lock(mutex_);
    switch (record.kind) {
      case worker::kZygoteReady:
        ready_ = true;
        break;
      case worker::kZygoteRefused:
        refusal_ = record.value < 0    ? std::string("the job's environment sets ") + worker::kNoZygoteVariable + "=1"
                   : record.value == 0 ? std::string("it could not count its threads in /proc/self/status")
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
  bool died = false;
  {
    std::lock_guard lock(mutex_);
    died = !closing_ && refusal_.empty() && ready_;
    if (refusal_.empty()) refusal_ = "it exited";
    gone_ = true;  // before it is reaped: abandon() must not signal its pid after that
    changed_.notify_all();
  }
  int status = 0;
  while (::waitpid(process_.pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (died) {
    // Its ranks die with it (their death signal): said here, since each only sees a SIGKILL.
    std::cerr << "fabricd: the zygote (pid " << process_.pid << ") died ("
              << (WIFSIGNALED(status) ? "signal " + std::to_string(WTERMSIG(status))
                                      : "exit code " + std::to_string(WEXITSTATUS(status)))
              << "), and the ranks it forked with it" << std::endl;
  }
}

// The zygote prints only its own failures; they go to fabricd's stderr as they are.
void Zygote::forward_output() {
  pollfd fds[2] = {{.fd = process_.err_fd, .events = POLLIN, .revents = 0},
                   {.fd = process_.out_fd, .events = POLLIN, .revents = 0}};
  char buffer[4096];
  for (int open = 2; open > 0;) {
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    for (pollfd& stream : fds) {
      if (stream.fd < 0 || stream.revents == 0) continue;
      const ssize_t n = ::read(stream.fd, buffer, sizeof(buffer));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        stream.fd = -1;  // poll() skips it from now on
        --open;
        continue;
      }
      std::cerr.write(buffer, n);
    }
  }
}

void Zygote::abandon(const std::string& why) {
  std::lock_guard lock(mutex_);
  if (refusal_.empty()) refusal_ = why;
  if (!gone_) ::kill(process_.pid, SIGKILL);  // not reaped yet (gone_ is set before): still its pid
  changed_.notify_all();
}

std::optional<StartedProcess> Zygote::fork_rank(const std::map<std::string, std::string>& env) {
  std::unique_lock lock(mutex_);
  if (gone_ || !refusal_.empty()) return std::nullopt;
  std::array<int, 2> out{-1, -1}, err{-1, -1};
  const auto close_all = [&] {
    for (const int fd : {out[0], out[1], err[0], err[1]}) {
      if (fd >= 0) ::close(fd);
    }
  };
  if (::pipe2(out.data(), O_CLOEXEC) != 0 || ::pipe2(err.data(), O_CLOEXEC) != 0) {
    close_all();  // out of descriptors: RankGroup starts the rank itself, or says why not
    return std::nullopt;
  }
  // One request at a time (the lock), so the next fork reply is this one's.
  const std::string request = worker::encode_assignment(env);
  if (!send_request(process_.control_fd, request, out[1], err[1])) {
    if (errno == EMSGSIZE) {
      refusal_ = "a rank's environment (" + std::to_string(request.size()) +
                 " bytes) does not fit in one message to it (net.core.wmem_max)";
    }
    close_all();
    return std::nullopt;
  }
  ::close(out[1]);  // the zygote has its copies, and the rank will
  ::close(err[1]);
  out[1] = err[1] = -1;
  // It answers once loaded (a second or so); one that never does is stuck, and let go.
  const bool answered = changed_.wait_for(
      lock, kPatience, [&] { return !fork_replies_.empty() || gone_ || !refusal_.empty(); });
  if (!answered) {
    refusal_ = "it did not answer within " + std::to_string(kPatience.count()) + " s";
    ::kill(process_.pid, SIGKILL);
  }
  if (fork_replies_.empty()) {
    close_all();
    return std::nullopt;
  }
  const auto [kind, value] = fork_replies_.front();
  fork_replies_.pop_front();
  if (kind != worker::kZygoteForked) {
    std::cerr << "fabricd: the zygote could not fork a rank: " << ::strerror(value) << std::endl;
    close_all();
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
  // Bounded: a zygote stuck in a library's initializer must not hold up its caller for ever.
  if (!changed_.wait_for(lock, kPatience, [&] { return ready_ || gone_ || !refusal_.empty(); })) {
    refusal_ = "it did not load within " + std::to_string(kPatience.count()) + " s";
    ::kill(process_.pid, SIGKILL);  // not gone_: not reaped, still its pid
  }
  return ready_ && !gone_ && refusal_.empty();
}

}  // namespace fabric::launcher
