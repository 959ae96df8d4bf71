// The zygote's side (fabric/worker/standby.h): serves fork requests before main() until
// fabricd closes its socket. serve_as_zygote() returns only in a forked child, which then
// goes on as the rank it was asked to be; the zygote itself ends in _exit.
#include "zygote_server.h"

#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "fabric/worker/standby.h"

namespace fabric::worker {

namespace {

[[noreturn]] void give_up(const std::string& why) {
  std::fprintf(stderr, "fabricd zygote %d: %s\n", static_cast<int>(::getpid()), why.c_str());
  ::_exit(1);
}

// A record fabricd must get: a lost exit would leave its waiter waiting. A zygote that cannot
// send exits instead, which fabricd sees (its ranks die with it, and their waits end).
void send_record(int fd, char kind, pid_t pid, int value) {
  const ZygoteRecord record{.kind = kind, .pid = static_cast<std::int32_t>(pid), .value = value};
  ssize_t sent;
  while ((sent = ::send(fd, &record, sizeof(record), MSG_NOSIGNAL)) < 0 && errno == EINTR) {
  }
  if (sent != static_cast<ssize_t>(sizeof(record))) give_up(std::string("cannot tell fabricd: ") + std::strerror(errno));
}

// Threads of this process, from /proc/self/status; 0 when it cannot be read.
int thread_count() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("Threads:", 0) == 0) return std::atoi(line.c_str() + 8);
  }
  return 0;
}

int shell_status(int native) { return WIFSIGNALED(native) ? 128 + WTERMSIG(native) : WEXITSTATUS(native); }

struct Request {
  std::string env;
  int out = -1, err = -1;
};

// One request: its message and its two descriptors. false at the end of the stream.
bool receive(int fd, std::vector<char>& buffer, Request& request) {
  iovec data{.iov_base = buffer.data(), .iov_len = buffer.size()};
  alignas(cmsghdr) char control[CMSG_SPACE(2 * sizeof(int))];
  msghdr message{};
  message.msg_iov = &data;
  message.msg_iovlen = 1;
  message.msg_control = control;
  message.msg_controllen = sizeof(control);
  ssize_t n;
  while ((n = ::recvmsg(fd, &message, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR) {
  }
  if (n < 0) give_up(std::string("cannot read a request: ") + std::strerror(errno));
  if (n == 0) return false;
  request.env.assign(buffer.data(), static_cast<std::size_t>(n));
  for (cmsghdr* header = CMSG_FIRSTHDR(&message); header != nullptr; header = CMSG_NXTHDR(&message, header)) {
    if (header->cmsg_level == SOL_SOCKET && header->cmsg_type == SCM_RIGHTS &&
        header->cmsg_len == CMSG_LEN(2 * sizeof(int))) {
      int fds[2];
      std::memcpy(fds, CMSG_DATA(header), sizeof(fds));
      request.out = fds[0];
      request.err = fds[1];
    }
  }
  if ((message.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0) request.env.clear();  // refused below
  return true;
}

// In the child: the rank's stdout, stderr, process group, death signal and environment.
void become_rank(const Request& request, const std::map<std::string, std::string>& env, pid_t zygote) {
  ::setpgid(0, 0);
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // dies with the zygote, which dies with fabricd
  if (::getppid() != zygote) ::_exit(137);
  ::dup2(request.out, STDOUT_FILENO);
  ::dup2(request.err, STDERR_FILENO);
  ::close(request.out);
  ::close(request.err);
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  ::clearenv();
  for (const auto& [name, value] : env) ::setenv(name.c_str(), value.c_str(), 1);
}

// Its children SIGKILLed with their groups and reaped: fabricd let go of this zygote.
[[noreturn]] void let_go(const std::set<pid_t>& children) {
  for (const pid_t child : children) ::kill(-child, SIGKILL);
  for (const pid_t child : children) {
    while (::waitpid(child, nullptr, 0) < 0 && errno == EINTR) {
    }
  }
  ::_exit(0);
}

}  // namespace

void serve_as_zygote(int fd) {
  const char* asked_not_to = std::getenv(kNoZygoteVariable);
  if (asked_not_to != nullptr && std::string(asked_not_to) == "1") {
    send_record(fd, kZygoteRefused, ::getpid(), -1);
    ::_exit(0);
  }
  if (const int threads = thread_count(); threads != 1) {  // 0: it could not count them
    send_record(fd, kZygoteRefused, ::getpid(), threads);
    ::_exit(0);
  }
  // SIGCHLD through a descriptor, so that one poll() waits for requests and exits alike.
  sigset_t child_signal;
  sigemptyset(&child_signal);
  sigaddset(&child_signal, SIGCHLD);
  ::sigprocmask(SIG_BLOCK, &child_signal, nullptr);
  const int exits = ::signalfd(-1, &child_signal, SFD_CLOEXEC | SFD_NONBLOCK);
  if (exits < 0) give_up(std::string("signalfd: ") + std::strerror(errno));
  const pid_t zygote = ::getpid();
  send_record(fd, kZygoteReady, zygote, 0);
  std::vector<char> buffer(kMaxZygoteRequestBytes);
  std::set<pid_t> children;
  for (;;) {
    pollfd fds[2] = {{.fd = fd, .events = POLLIN, .revents = 0}, {.fd = exits, .events = POLLIN, .revents = 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      give_up(std::string("poll: ") + std::strerror(errno));
    }
    if (fds[1].revents != 0) {
      signalfd_siginfo info;
      while (::read(exits, &info, sizeof(info)) == static_cast<ssize_t>(sizeof(info))) {
      }
      int native = 0;
      for (pid_t child; (child = ::waitpid(-1, &native, WNOHANG)) > 0;) {
        children.erase(child);
        send_record(fd, kZygoteExited, child, shell_status(native));
      }
    }
    if (fds[0].revents == 0) continue;
    Request request;
    if (!receive(fd, buffer, request)) let_go(children);
    const auto env = decode_assignment(request.env);
    if (!env || request.out < 0 || request.err < 0) {
      if (request.out >= 0) ::close(request.out);
      if (request.err >= 0) ::close(request.err);
      send_record(fd, kZygoteForkFailed, 0, EINVAL);
      continue;
    }
    const pid_t child = ::fork();
    const int fork_error = errno;
    if (child == 0) {
      ::close(exits);
      ::close(fd);
      become_rank(request, *env, zygote);
      return;  // into the program's own static initializers, then main()
    }
    ::close(request.out);
    ::close(request.err);
    if (child < 0) {
      send_record(fd, kZygoteForkFailed, 0, fork_error);
      continue;
    }
    ::setpgid(child, child);  // here too, so that its group exists before fabricd signals it
    children.insert(child);
    send_record(fd, kZygoteForked, child, 0);
  }
}

}  // namespace fabric::worker
