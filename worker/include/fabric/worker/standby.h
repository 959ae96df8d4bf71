// Warm standbys: processes of a job's program that fabricd starts ahead of a restart, so
// that a restarted rank does not have to load the program and LibTorch again (docs/
// ARCHITECTURE.md, "Restarts from warm standbys").
//
// fabricd starts a standby with FABRICD_STANDBY_FD naming one end of a socket pair. A
// program linked with libfabric stops in a static initializer, before main() and so before
// any of the user's code: it tells fabricd it is ready (one byte, kStandbyReady) and waits.
// To make it a rank, fabricd sends the rank's whole environment (encode_assignment); the
// process replaces its environment with it, closes the socket and goes on into main() as
// if it had just been started with that environment. When fabricd closes the socket
// without an assignment (the job ended, or no restart came), the standby exits 0 without
// running main().
//
// A zygote is the same wait, started with FABRICD_ZYGOTE_FD instead (a SOCK_SEQPACKET socket):
// it never becomes a rank itself but forks them. Each request is one message: a rank's
// environment (encode_assignment) with its stdout and stderr as two descriptors (SCM_RIGHTS).
// The zygote forks; the child takes those as its stdout and stderr, its own process group, a
// death signal tied to the zygote, and the environment, and goes on into main(). The zygote
// answers with ZygoteRecords: kZygoteReady once it serves (or kZygoteRefused, with its
// thread count, when a library started threads before main(): a fork would copy their locks
// but not them; 0 when it could not count them; -1 when FABRICD_NO_ZYGOTE=1 says not to), then kZygoteForked (or kZygoteForkFailed, with errno) per request, and
// kZygoteExited with a shell-style status for each child it reaped. Closing fabricd's end
// makes it SIGKILL its children, reap them and exit. Its children are forked with what the
// shared libraries set up at load time, and nothing of the program's own: the program's
// static initializers and main() run in each child.
//
// Torch-free, and free of gRPC: the launcher includes it too.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

namespace fabric::worker {

// The variable that names the control socket's descriptor in a standby.
inline constexpr const char* kStandbyFdVariable = "FABRICD_STANDBY_FD";
// The descriptor number fabricd gives the control socket.
inline constexpr int kStandbyControlFd = 3;
// What a standby writes once it waits for its assignment.
inline constexpr char kStandbyReady = 'R';
// A standby's process name (comm) while it waits; its own again once it is a rank.
inline constexpr const char* kStandbyProcessName = "fabricd-standby";
// The ELF section that only a program holding the standby hook has (launcher's
// has_standby_hook reads section names, which no other use of this header puts in a file).
inline constexpr const char* kStandbyHookSection = "fabricd_standby_hook";
// No environment fabricd sends is this long; a longer message is a broken peer.
inline constexpr std::size_t kMaxAssignmentBytes = 16 << 20;

// The variable that names a zygote's control socket (the same descriptor number).
inline constexpr const char* kZygoteFdVariable = "FABRICD_ZYGOTE_FD";
// A zygote's message to fabricd: one per SOCK_SEQPACKET message, sent as it is laid out
// (both ends are on one machine, built from this header).
struct ZygoteRecord {
  char kind = 0;
  std::int32_t pid = 0;
  std::int32_t value = 0;  // by kind: threads, errno, exit status
};
inline constexpr char kZygoteReady = 'R';
inline constexpr char kZygoteRefused = 'N';
inline constexpr char kZygoteForked = 'F';
inline constexpr char kZygoteForkFailed = 'E';
inline constexpr char kZygoteExited = 'X';
// Set to 1 in a job's environment, its program refuses to be a zygote (value -1): for a
// program that knows it cannot be forked; its restarts then come from standbys.
inline constexpr const char* kNoZygoteVariable = "FABRICD_NO_ZYGOTE";
// The zygote's receive buffer for one request. What fits in one SEQPACKET message is bounded
// lower, by the sending socket's buffer (net.core.wmem_max, about 208 KiB by default): an
// environment that does not fit is not forked (Zygote::fork_rank says why).
inline constexpr std::size_t kMaxZygoteRequestBytes = 1 << 20;

// "NAME=VALUE\0" for each variable, then one more "\0". Names and values cannot hold a NUL.
std::string encode_assignment(const std::map<std::string, std::string>& env);
// The environment in `message`, or nullopt when it is not a whole assignment (its end is
// missing, or an entry has no '=').
std::optional<std::map<std::string, std::string>> decode_assignment(const std::string& message);

// True in a process that was started as a standby and has since been given its rank.
// Referencing it also keeps the static initializer that does the waiting in a program
// linked with libfabric (libfabric's Fabric constructor does).
bool started_as_standby();

}  // namespace fabric::worker
