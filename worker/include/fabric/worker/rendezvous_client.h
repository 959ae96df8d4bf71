// RendezvousClient: a rank's side of fabric.v1.RendezvousService, the store, barriers,
// heartbeats and error reports its launcher (fabricd) serves at FABRICD_ENDPOINT.
//
// This header is plain C++: no gRPC or protobuf type crosses it, so LibTorch code (whose
// wheel bundles its own protobuf headers) can include it. Every call carries the rank's
// context (job, generation, rank), so a rank of an older generation is refused with
// kStaleGeneration and must exit. Thread-safe: one client serves the store, the heartbeat
// thread and the error reporter of a process.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace fabric::worker {

// Who this rank is, as fabricd told it through the environment.
struct RankIdentity {
  std::string endpoint;  // FABRICD_ENDPOINT, host:port: the launcher that supervises this rank
  // FABRICD_STORE_ENDPOINT: where the job's store and barriers live (node rank 0's agent
  // across nodes); FABRICD_ENDPOINT when unset.
  std::string store_endpoint;
  std::string job_id;    // FABRICD_JOB_ID
  std::int32_t generation = 0;  // FABRICD_RESTART_COUNT
  std::int32_t rank = 0;        // RANK
  // FABRICD_JOB_SECRET: sent with every call (`fabricd-job-secret` metadata); the launcher
  // refuses a call without it.
  std::string secret;
  // FABRICD_TLS_CA: the cluster CA's PEM file, when the launcher serves TLS (node agents
  // with a certificate); empty: plain text (fabricd run, on loopback).
  std::string tls_ca;
};

// The identity in this process's environment; nullopt when FABRICD_ENDPOINT is unset (the
// program was not started by fabricd). std::invalid_argument naming the variable when one
// of the others (FABRICD_JOB_SECRET included) is missing or not a number.
std::optional<RankIdentity> identity_from_environment();

// Why a call failed, in the terms of the proto's status contract.
enum class RendezvousErrorKind {
  kTimeout,          // DEADLINE_EXCEEDED: keys or ranks did not arrive in time
  kStaleGeneration,  // FAILED_PRECONDITION: this rank's generation is over; exit
  kAborted,          // ABORTED: the generation ended (a peer failed) during the call
  kUnavailable,      // UNAVAILABLE: fabricd is gone or shutting down
  kInvalid,          // INVALID_ARGUMENT / OUT_OF_RANGE: a bad request
  kNotFound,         // NOT_FOUND: fabricd serves no such job
  kUnauthenticated,  // UNAUTHENTICATED: the call lacks the job's secret
  kExhausted,        // RESOURCE_EXHAUSTED: the job's store is at the launcher's limit
  kOther,
};

class RendezvousError : public std::runtime_error {
 public:
  RendezvousError(RendezvousErrorKind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  RendezvousErrorKind kind() const { return kind_; }

 private:
  RendezvousErrorKind kind_;
};

// When the rank entered the gradient synchronization of a step (rendezvous.proto's StepArrival).
struct StepArrival {
  std::int64_t step = 0;        // optimizer steps taken before it
  std::int64_t unix_nanos = 0;  // CLOCK_REALTIME
};

// What a rank says in a heartbeat (rendezvous.proto's RankHeartbeatRequest).
struct Heartbeat {
  std::optional<std::int64_t> step;
  std::optional<std::int64_t> epoch;
  std::string phase;
  // How long ago the rank last made progress (zero while it waits on peers).
  std::chrono::milliseconds since_progress{0};
  // Its latest steps' arrivals at the gradient synchronization, oldest first.
  std::vector<StepArrival> arrivals;
  double steps_per_second = 0;
  double samples_per_second = 0;
  std::int64_t samples = 0;
  std::map<std::string, double> metrics;  // the latest fabric.log scalars
};

struct HeartbeatReply {
  std::chrono::milliseconds interval;  // send the next one within this
  bool stop_requested = false;         // fabricd asks the rank to finish cleanly
  std::string stop_reason;
};

struct ErrorReport {
  std::string message;
  std::string error_type;
  std::string stack_trace;
  std::optional<std::int64_t> step;
};

// Timeouts follow c10d: nullopt = the job's rdzv timeout, zero = wait until the key
// appears or the generation ends.
using Timeout = std::optional<std::chrono::milliseconds>;

class RendezvousClient {
 public:
  explicit RendezvousClient(RankIdentity identity);
  ~RendezvousClient();
  RendezvousClient(const RendezvousClient&) = delete;
  RendezvousClient& operator=(const RendezvousClient&) = delete;

  const RankIdentity& identity() const;

  // The c10d store verbs (see rendezvous.proto for each one's exact semantics).
  void set(const std::string& key, const std::string& value);
  std::string get(const std::string& key, Timeout timeout = std::nullopt);
  std::int64_t add(const std::string& key, std::int64_t amount);
  // The value now stored (or `expected` when the key is missing and `expected` is not
  // empty), as c10d::Store::compareSet returns it.
  std::string compare_set(const std::string& key, const std::string& expected, const std::string& desired);
  void wait(const std::vector<std::string>& keys, Timeout timeout = std::nullopt);
  bool check(const std::vector<std::string>& keys);
  bool delete_key(const std::string& key);
  std::int64_t num_keys();

  // Blocks until world_size ranks (0: the job's) of this generation reach (name, sequence).
  void barrier(const std::string& name, std::int64_t sequence, std::int32_t world_size = 0,
               Timeout timeout = std::nullopt);

  HeartbeatReply heartbeat(const Heartbeat& beat);
  // Bounded by `deadline`: it is sent while the process is going down.
  void report_error(const ErrorReport& error, std::chrono::milliseconds deadline = std::chrono::seconds(2));

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace fabric::worker
