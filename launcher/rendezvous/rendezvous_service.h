// RendezvousServiceImpl: the server side of fabric.v1.RendezvousService — the per-job,
// per-generation key-value store, barriers, heartbeats and error reports that a launcher
// serves to the ranks it started (the contract, status codes included, is the comment in
// proto/fabric/v1/rendezvous.proto).
//
// Ownership and threading. One supervisor owns the service and drives its plain C++ API
// (start_job, begin_generation, end_job, ...); gRPC calls the handlers from its own
// threads. Every method is thread-safe. Each job has one mutex and one condition variable
// guarding its store, barriers, heartbeats and errors; the job table has its own mutex,
// never held while a job's is taken. Blocking handlers (Get, Wait, Barrier) wait on the
// job's condition variable, never poll, until their keys or ranks arrive, their timeout
// (or the client's gRPC deadline, if earlier) passes, their generation ends, or shutdown()
// is called. Call shutdown() before grpc::Server::Shutdown(): the server waits for
// in-flight handlers, and a Get with no timeout would otherwise hold it forever.

#ifndef FABRIC_LAUNCHER_RENDEZVOUS_RENDEZVOUS_SERVICE_H_
#define FABRIC_LAUNCHER_RENDEZVOUS_RENDEZVOUS_SERVICE_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>
#include <string_view>

#include "fabric/v1/rendezvous.grpc.pb.h"

namespace fabric::launcher {

// Per-job settings; the supervisor derives them from the JobSpec.
struct RendezvousJobOptions {
  // The timeout of Get, Wait and Barrier when a request gives none (JobSpec.rdzv_timeout;
  // c10d's default, 30 minutes, when unset there). Zero: no timeout.
  std::chrono::milliseconds rdzv_timeout = std::chrono::minutes(30);
  // What Heartbeat answers as the interval of the next heartbeat; the supervisor picks it
  // well inside JobSpec.heartbeat_timeout.
  std::chrono::milliseconds heartbeat_interval = std::chrono::seconds(30);
  // The generation the job starts in (FABRICD_RESTART_COUNT of its first ranks).
  std::int32_t generation = 0;
  // The job's secret (FABRICD_JOB_SECRET of its ranks, security/secrets.h): every request
  // must carry it as `fabricd-job-secret` metadata, or it is refused UNAUTHENTICATED.
  // Required: start_job refuses an empty one.
  std::string secret;
};

// What one job's store may hold, so that no rank can exhaust the launcher's memory: a
// write beyond either is refused RESOURCE_EXHAUSTED, naming the limit.
struct RendezvousLimits {
  std::size_t max_keys_per_job = 100'000;
  std::size_t max_bytes_per_job = std::size_t{256} << 20;  // keys and values together
};

// The last heartbeat of a rank in the job's current generation.
struct RankHeartbeat {
  // When the launcher received it (steady clock: compare with steady_clock::now()).
  std::chrono::steady_clock::time_point received_at;
  // When the rank last made progress, by its own account (received_at - since_progress):
  // what hang detection measures silence from.
  std::chrono::steady_clock::time_point last_progress;
  std::optional<std::int64_t> step;
  std::optional<std::int64_t> epoch;
  std::string phase;
  // Its latest steps' arrivals at the gradient synchronization (at most 32; see
  // rendezvous.proto's StepArrival), for straggler detection.
  struct Arrival {
    std::int64_t step = 0;
    std::int64_t unix_nanos = 0;
  };
  std::vector<Arrival> arrivals;
  // The rank's own rates and counts, and its latest logged scalars (at most 16).
  double steps_per_second = 0;
  double samples_per_second = 0;
  std::int64_t samples = 0;
  std::map<std::string, double> metrics;
};

class RendezvousServiceImpl final : public fabric::v1::RendezvousService::Service {
 public:
  // await_unstarted: how long a request of a job or generation not begun yet waits for it
  // before it is refused. Zero on one node (nothing can be early there); node agents wait,
  // since a rank of another node may reach the job's store before its assignment does.
  explicit RendezvousServiceImpl(std::chrono::milliseconds await_unstarted = std::chrono::milliseconds(0),
                                 RendezvousLimits limits = {});
  ~RendezvousServiceImpl() override;
  RendezvousServiceImpl(const RendezvousServiceImpl&) = delete;
  RendezvousServiceImpl& operator=(const RendezvousServiceImpl&) = delete;

  // --- The supervisor's API ---------------------------------------------------------

  // Starts serving job_id with world_size ranks, in options.generation with an empty
  // store. Throws std::invalid_argument when the job is already served, job_id is empty,
  // world_size < 1, options are negative or the secret is empty.
  void start_job(const std::string& job_id, std::int32_t world_size, RendezvousJobOptions options = {});

  // Ends the job's current generation and starts `generation` (> the current one) with an
  // empty store, no barriers, heartbeats or reported errors. Every call still blocked in
  // the old generation returns ABORTED at once; later requests of the old generation get
  // FAILED_PRECONDITION. Read reported_errors() before calling this. Throws
  // std::invalid_argument for an unknown job or a generation that does not increase.
  void begin_generation(const std::string& job_id, std::int32_t generation);

  // The current generation of job_id; nullopt when the job is not served.
  [[nodiscard]] std::optional<std::int32_t> generation(const std::string& job_id) const;

  // The last heartbeat `rank` sent in the current generation; nullopt when it sent none,
  // or the job is not served.
  [[nodiscard]] std::optional<RankHeartbeat> last_heartbeat(const std::string& job_id, std::int32_t rank) const;

  // The last heartbeat of every rank that sent one in the current generation.
  [[nodiscard]] std::map<std::int32_t, RankHeartbeat> heartbeats(const std::string& job_id) const;

  // The errors reported in the current generation, by rank (a rank's second report
  // replaces its first). Empty for a job that is not served.
  [[nodiscard]] std::map<std::int32_t, fabric::v1::RankError> reported_errors(const std::string& job_id) const;

  // The ranks that have made any request in the current generation, with when they made
  // their first: how the launcher sees a rendezvous that never completes.
  [[nodiscard]] std::map<std::int32_t, std::chrono::steady_clock::time_point> joined_ranks(
      const std::string& job_id) const;

  // From now on every Heartbeat of the job answers stop_requested with this reason (the
  // job is being cancelled with a grace period). Returns false for an unknown job.
  bool request_stop(const std::string& job_id, const std::string& reason);

  // Forgets the job: its blocked calls return ABORTED, later requests NOT_FOUND. Returns
  // false when the job was not served.
  bool end_job(const std::string& job_id);

  // The launcher is going away: blocked calls return UNAVAILABLE at once, and so does
  // every later request. Idempotent; there is no way back.
  void shutdown();

  // Waits until at least `count` Get/Wait/Barrier calls of job_id are blocked, or until
  // `timeout`; returns whether they are. For tests and diagnostics ("3 ranks are blocked
  // in the store"), so a test never has to sleep to know a call is waiting.
  bool wait_for_blocked_calls(const std::string& job_id, int count, std::chrono::milliseconds timeout) const;

  // --- fabric.v1.RendezvousService --------------------------------------------------

  grpc::Status Set(grpc::ServerContext* context, const fabric::v1::SetRequest* request,
                   fabric::v1::SetResponse* response) override;
  grpc::Status Get(grpc::ServerContext* context, const fabric::v1::GetRequest* request,
                   fabric::v1::GetResponse* response) override;
  grpc::Status Add(grpc::ServerContext* context, const fabric::v1::AddRequest* request,
                   fabric::v1::AddResponse* response) override;
  grpc::Status CompareSet(grpc::ServerContext* context, const fabric::v1::CompareSetRequest* request,
                          fabric::v1::CompareSetResponse* response) override;
  grpc::Status Wait(grpc::ServerContext* context, const fabric::v1::WaitRequest* request,
                    fabric::v1::WaitResponse* response) override;
  grpc::Status Check(grpc::ServerContext* context, const fabric::v1::CheckRequest* request,
                     fabric::v1::CheckResponse* response) override;
  grpc::Status DeleteKey(grpc::ServerContext* context, const fabric::v1::DeleteKeyRequest* request,
                         fabric::v1::DeleteKeyResponse* response) override;
  grpc::Status NumKeys(grpc::ServerContext* context, const fabric::v1::NumKeysRequest* request,
                       fabric::v1::NumKeysResponse* response) override;
  grpc::Status Barrier(grpc::ServerContext* context, const fabric::v1::BarrierRequest* request,
                       fabric::v1::BarrierResponse* response) override;
  grpc::Status Heartbeat(grpc::ServerContext* context, const fabric::v1::RankHeartbeatRequest* request,
                         fabric::v1::RankHeartbeatResponse* response) override;
  grpc::Status ReportError(grpc::ServerContext* context, const fabric::v1::ReportErrorRequest* request,
                           fabric::v1::ReportErrorResponse* response) override;

 private:
  struct Job;
  // A request's job, locked and checked against the request's context.
  struct Admitted;

  [[nodiscard]] std::shared_ptr<Job> find_job(const std::string& job_id) const;
  // find_job, waiting until `deadline` for a job that is not served yet.
  [[nodiscard]] std::shared_ptr<Job> await_job(const std::string& job_id,
                                               std::chrono::steady_clock::time_point deadline) const;
  // The store write of `key` = `value` within the limits (the job's lock held).
  [[nodiscard]] grpc::Status store_put(Job& job, std::string_view rpc, const std::string& key, std::string value) const;
  [[nodiscard]] grpc::Status admit(const grpc::ServerContext* server_context, const fabric::v1::RankContext* context,
                                   bool has_context, Admitted& out) const;

  mutable std::mutex jobs_mutex_;
  mutable std::condition_variable jobs_changed_;  // a job started, or shutdown
  std::map<std::string, std::shared_ptr<Job>> jobs_;  // guarded by jobs_mutex_
  std::atomic<bool> shutting_down_{false};
  const std::chrono::milliseconds await_unstarted_;
  const RendezvousLimits limits_;
};

}  // namespace fabric::launcher

#endif  // FABRIC_LAUNCHER_RENDEZVOUS_RENDEZVOUS_SERVICE_H_
