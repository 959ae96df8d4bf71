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
// Torch-free, and free of gRPC: the launcher includes it too.
#pragma once

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
// No environment fabricd sends is this long; a longer message is a broken peer.
inline constexpr std::size_t kMaxAssignmentBytes = 16 << 20;

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
