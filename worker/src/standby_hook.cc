// The standby's side (fabric/worker/standby.h): a static initializer that, in a process
// started with FABRICD_STANDBY_FD, waits before main() until fabricd gives it a rank, and in
// one started with FABRICD_ZYGOTE_FD, forks ranks until fabricd lets it go.
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "fabric/worker/standby.h"
#include "zygote_server.h"

namespace fabric::worker {

// What has_standby_hook (launcher/ranks/zygote.h) looks for: a section of this name exists
// in a program only where this file was linked into it.
[[gnu::used, gnu::section("fabricd_standby_hook")]] const char kHookMarker[] = "fabricd standby hook, protocol 1";

namespace {

bool assigned = false;

[[noreturn]] void give_up(const std::string& why) {
  std::fprintf(stderr, "fabricd standby %d: %s\n", static_cast<int>(::getpid()), why.c_str());
  ::_exit(1);
}

// Reads the control socket to its end: fabricd sends one assignment, then shuts its side.
std::string read_to_end(int fd) {
  std::string message;
  char buffer[65536];
  for (;;) {
    const ssize_t n = ::read(fd, buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    // fabricd closed its end with our ready byte unread: the same end of the stream.
    if (n < 0 && errno == ECONNRESET) return message;
    if (n < 0) give_up(std::string("cannot read its assignment: ") + std::strerror(errno));
    if (n == 0) return message;
    message.append(buffer, static_cast<std::size_t>(n));
    if (message.size() > kMaxAssignmentBytes) give_up("its assignment is larger than any fabricd sends");
  }
}

// The descriptor `variable` names, or -1 when it is not set.
int descriptor(const char* variable) {
  const char* text = std::getenv(variable);
  if (text == nullptr) return -1;
  int fd = -1;
  const char* end = text + std::strlen(text);
  if (auto [stop, error] = std::from_chars(text, end, fd); error != std::errc() || stop != end || fd < 0) {
    give_up(std::string(variable) + "='" + text + "' is not a descriptor number");
  }
  return fd;
}

// Before main(), and so before any of the program's own code: a standby has only loaded
// the program and its libraries (the expensive part of a start) when it gets here. Priority
// 101, the first one not reserved: ahead of the program's own static initializers (default
// priority), which run only once it is a rank; the shared libraries' (LibTorch's operator
// registrations) ran before, as they always run before the executable's. _exit, not exit,
// when it leaves without a rank: the program's static objects were never made.
__attribute__((constructor(101))) void wait_for_a_rank_if_standby() {
  if (const int zygote = descriptor(kZygoteFdVariable); zygote >= 0) {
    serve_as_zygote(zygote);  // returns in a child, made a rank
    assigned = true;
    return;
  }
  const int fd = descriptor(kStandbyFdVariable);
  if (fd < 0) return;
  // Named for as long as it waits, so that anyone may see it waits (ps, /proc/PID/comm).
  char name[16] = {};
  ::prctl(PR_GET_NAME, name);
  ::prctl(PR_SET_NAME, kStandbyProcessName);
  // Unanswered when fabricd already sent the assignment and closed its end (this standby
  // was taken while it loaded): what counts is what it reads. MSG_NOSIGNAL: no SIGPIPE then.
  [[maybe_unused]] const ssize_t said = ::send(fd, &kStandbyReady, 1, MSG_NOSIGNAL);
  const std::string message = read_to_end(fd);
  ::close(fd);
  ::prctl(PR_SET_NAME, name);
  if (message.empty()) ::_exit(0);  // released: no restart needs it
  const auto env = decode_assignment(message);
  if (!env) give_up("its assignment is not an environment (a fabricd of another version?)");
  ::clearenv();
  for (const auto& [name, value] : *env) ::setenv(name.c_str(), value.c_str(), 1);
  assigned = true;
}

}  // namespace

bool started_as_standby() { return assigned; }

}  // namespace fabric::worker
