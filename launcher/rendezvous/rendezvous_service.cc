#include "rendezvous/rendezvous_service.h"

#include "security/secrets.h"

#include <algorithm>
#include <charconv>
#include <condition_variable>
#include <limits>
#include <set>
#include <stdexcept>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace fabric::launcher {

namespace v1 = fabric::v1;
using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

namespace {

// Timeouts beyond this are treated as none, so a deadline never overflows the clock.
constexpr auto kForever = std::chrono::hours(24 * 365 * 100);

struct BarrierState {
  std::int32_t world_size = 0;
  std::set<std::int32_t> arrived;
  bool complete = false;
};

std::string format_duration(milliseconds d) {
  const auto ms = d.count();
  if (ms != 0 && ms % 60000 == 0) return std::to_string(ms / 60000) + "min";
  if (ms % 1000 == 0) return std::to_string(ms / 1000) + "s";
  return std::to_string(ms) + "ms";
}

std::string quoted(std::string_view s) {
  // Built by appending: `"\"" + std::string(s)` trips GCC 12's -Wrestrict false positive (bug 105329).
  std::string out;
  out.reserve(s.size() + 2);
  out.append(1, '"').append(s).append(1, '"');
  return out;
}

template <typename Range, typename Format>
std::string join(const Range& items, Format format) {
  std::string out;
  for (const auto& item : items) {
    if (!out.empty()) out += ", ";
    out += format(item);
  }
  return out;
}

grpc::Status invalid(const std::string& message) { return {grpc::StatusCode::INVALID_ARGUMENT, message}; }

grpc::Status check_key(std::string_view rpc, const std::string& key) {
  if (key.empty()) {
    return invalid(std::string(rpc) +
                   ": the key is empty; every store key must be a non-empty string (c10d "
                   "prefixes keys, e.g. \"/pg/0/addr\"), so pass the key you meant.");
  }
  return grpc::Status::OK;
}

// A request's timeout, per the proto: unset -> the job's default, zero -> none (nullopt).
grpc::Status resolve_timeout(std::string_view rpc, bool has_timeout, const google::protobuf::Duration& timeout,
                             milliseconds job_default, std::optional<milliseconds>& out) {
  if (!has_timeout) {
    out = job_default.count() == 0 || job_default > kForever ? std::nullopt : std::optional<milliseconds>(job_default);
    return grpc::Status::OK;
  }
  const std::int64_t seconds = timeout.seconds();
  const std::int32_t nanos = timeout.nanos();
  if (seconds < 0 || nanos < 0 || nanos >= 1'000'000'000) {
    return invalid(std::string(rpc) + ": the timeout (" + std::to_string(seconds) + "s " + std::to_string(nanos) +
                   "ns) is negative or malformed; pass a positive duration, zero for no "
                   "timeout, or leave it unset for the job's rdzv_timeout.");
  }
  if (seconds == 0 && nanos == 0) {
    out = std::nullopt;
    return grpc::Status::OK;
  }
  constexpr std::int64_t kForeverSeconds = std::chrono::duration_cast<std::chrono::seconds>(kForever).count();
  if (seconds >= kForeverSeconds) {
    out = std::nullopt;
    return grpc::Status::OK;
  }
  // Rounded up, so that a sub-millisecond timeout never becomes zero (no timeout).
  out = milliseconds(seconds * 1000 + (nanos + 999'999) / 1'000'000);
  return grpc::Status::OK;
}

// The moment a blocking call gives up: its timeout, or the client's gRPC deadline when
// that comes first (the client has stopped listening by then). nullopt: never.
std::optional<Clock::time_point> give_up_at(const grpc::ServerContext* context, std::optional<milliseconds> timeout) {
  const auto now = Clock::now();
  std::optional<Clock::time_point> at;
  if (timeout) at = now + *timeout;
  if (context != nullptr) {
    const auto client = context->deadline();
    const auto system_now = std::chrono::system_clock::now();
    if (client != std::chrono::system_clock::time_point::max() && client < system_now + kForever) {
      const auto from_client = now + std::chrono::duration_cast<Clock::duration>(client - system_now);
      if (!at || from_client < *at) at = from_client;
    }
  }
  return at;
}

}  // namespace

struct RendezvousServiceImpl::Job {
  Job(std::string id_in, std::int32_t world_size_in, RendezvousJobOptions options_in)
      : id(std::move(id_in)), world_size(world_size_in), options(options_in), generation(options_in.generation) {}

  const std::string id;
  const std::int32_t world_size;
  const RendezvousJobOptions options;

  mutable std::mutex mutex;
  // Notified on every change a blocked call may be waiting for: a key appearing, a barrier
  // arrival, a new generation, the job's end, shutdown, a call starting to block.
  mutable std::condition_variable changed;

  // Everything below is guarded by mutex.
  std::int32_t generation;
  bool ended = false;
  std::map<std::string, std::string> store;
  std::size_t store_bytes = 0;  // the keys' and values' sizes summed, against the limit
  std::map<std::pair<std::string, std::int64_t>, BarrierState> barriers;
  std::map<std::int32_t, RankHeartbeat> heartbeats;
  std::map<std::int32_t, v1::RankError> errors;
  std::map<std::int32_t, Clock::time_point> joined;  // each rank's first admitted request
  std::optional<std::string> stop_reason;
  int blocked_calls = 0;

  void clear_generation_state() {
    store.clear();
    store_bytes = 0;
    barriers.clear();
    heartbeats.clear();
    errors.clear();
    joined.clear();
  }
};

struct RendezvousServiceImpl::Admitted {
  std::shared_ptr<Job> job;
  std::unique_lock<std::mutex> lock;
  std::int32_t generation = 0;
};

namespace {

enum class WaitEnd { kReady, kTimedOut, kAborted, kUnavailable };

// Blocks on the job's condition variable until ready() holds, the deadline passes, the
// caller's generation ends or the service shuts down. The caller holds the job's lock.
template <typename Job, typename Ready>
WaitEnd block_until(Job& job, std::unique_lock<std::mutex>& lock, std::int32_t generation,
                    const std::atomic<bool>& shutting_down, std::optional<Clock::time_point> deadline, Ready ready) {
  const auto over = [&] { return shutting_down.load() || job.ended || job.generation != generation; };
  const auto stop = [&] { return over() || ready(); };
  ++job.blocked_calls;
  job.changed.notify_all();
  if (deadline) {
    job.changed.wait_until(lock, *deadline, stop);
  } else {
    job.changed.wait(lock, stop);
  }
  --job.blocked_calls;
  // The end of the generation is checked first: it replaces the state ready() reads.
  if (shutting_down.load()) return WaitEnd::kUnavailable;
  if (job.ended || job.generation != generation) return WaitEnd::kAborted;
  return ready() ? WaitEnd::kReady : WaitEnd::kTimedOut;
}

grpc::Status unavailable() {
  return {grpc::StatusCode::UNAVAILABLE,
          "the launcher is shutting down and serves no more rendezvous requests; the rank "
          "should exit (its launcher will not restart it from here)."};
}

grpc::Status aborted(std::string_view rpc, const std::string& job_id, std::int32_t generation, bool job_ended) {
  return {grpc::StatusCode::ABORTED, std::string(rpc) + ": generation " + std::to_string(generation) + " of job " +
                                         quoted(job_id) + " ended while the call was in progress (" +
                                         (job_ended ? "the job ended"
                                                    : "a new generation began: a peer failed or the "
                                                      "job is restarting") +
                                         "); this rank must exit, and the launcher restarts it in the next generation "
                                         "if restarts remain."};
}

// The status of a blocking call that did not get what it waited for.
grpc::Status unfinished(WaitEnd end, std::string_view rpc, const std::string& job_id, std::int32_t generation,
                        bool job_ended, const std::string& timed_out_message) {
  switch (end) {
    case WaitEnd::kUnavailable:
      return unavailable();
    case WaitEnd::kAborted:
      return aborted(rpc, job_id, generation, job_ended);
    case WaitEnd::kTimedOut:
      return {grpc::StatusCode::DEADLINE_EXCEEDED, timed_out_message};
    case WaitEnd::kReady:
      break;
  }
  return grpc::Status::OK;
}

// Whether the call's metadata carries `secret` (compared in constant time).
bool carries_secret(const grpc::ServerContext* context, const std::string& secret) {
  if (context == nullptr) return false;
  const auto& metadata = context->client_metadata();
  const auto it = metadata.find(kJobSecretMetadata);
  return it != metadata.end() && secrets_equal(std::string_view(it->second.data(), it->second.size()), secret);
}

std::string timeout_text(std::optional<milliseconds> timeout) {
  return timeout ? format_duration(*timeout) : std::string("the client's deadline");
}

}  // namespace

RendezvousServiceImpl::RendezvousServiceImpl(milliseconds await_unstarted, RendezvousLimits limits)
    : await_unstarted_(await_unstarted), limits_(limits) {}
RendezvousServiceImpl::~RendezvousServiceImpl() = default;

// --- The supervisor's API -----------------------------------------------------------

void RendezvousServiceImpl::start_job(const std::string& job_id, std::int32_t world_size,
                                      RendezvousJobOptions options) {
  if (job_id.empty()) throw std::invalid_argument("start_job: the job id is empty");
  if (world_size < 1) {
    throw std::invalid_argument("start_job: job " + quoted(job_id) + " has world_size " + std::to_string(world_size) +
                                "; it must be at least 1");
  }
  if (options.generation < 0 || options.rdzv_timeout.count() < 0 || options.heartbeat_interval.count() < 0) {
    throw std::invalid_argument("start_job: job " + quoted(job_id) +
                                " has a negative generation, rdzv_timeout or "
                                "heartbeat_interval");
  }
  if (options.secret.empty()) {
    throw std::invalid_argument("start_job: job " + quoted(job_id) +
                                " has no secret; every job's ranks authenticate with one (random_secret())");
  }
  std::lock_guard lock(jobs_mutex_);
  const auto [it, inserted] = jobs_.try_emplace(job_id, std::make_shared<Job>(job_id, world_size, options));
  if (!inserted) {
    throw std::invalid_argument("start_job: job " + quoted(job_id) +
                                " is already served; end_job it first or use a new id");
  }
  jobs_changed_.notify_all();
}

void RendezvousServiceImpl::begin_generation(const std::string& job_id, std::int32_t generation) {
  const std::shared_ptr<Job> job = find_job(job_id);
  if (!job) {
    throw std::invalid_argument("begin_generation: no job " + quoted(job_id) + " is served; start_job it first");
  }
  std::lock_guard lock(job->mutex);
  if (generation <= job->generation) {
    throw std::invalid_argument("begin_generation: job " + quoted(job_id) + " is in generation " +
                                std::to_string(job->generation) + "; the next must be greater, not " +
                                std::to_string(generation));
  }
  job->generation = generation;
  job->clear_generation_state();
  job->changed.notify_all();
}

std::optional<std::int32_t> RendezvousServiceImpl::generation(const std::string& job_id) const {
  const std::shared_ptr<Job> job = find_job(job_id);
  if (!job) return std::nullopt;
  std::lock_guard lock(job->mutex);
  return job->generation;
}

std::optional<RankHeartbeat> RendezvousServiceImpl::last_heartbeat(const std::string& job_id, std::int32_t rank) const {
  const std::shared_ptr<Job> job = find_job(job_id);
  if (!job) return std::nullopt;
  std::lock_guard lock(job->mutex);
  const auto it = job->heartbeats.find(rank);
  if (it == job->heartbeats.end()) return std::nullopt;
  return it->second;
}

std::map<std::int32_t, RankHeartbeat> RendezvousServiceImpl::heartbeats(const std::string& job_id) const {
  const std::shared_ptr<Job> job = find_job(job_id);
  if (!job) return {};
  std::lock_guard lock(job->mutex);
  return job->heartbeats;
}

std::map<std::int32_t, v1::RankError> RendezvousServiceImpl::reported_errors(const std::string& job_id) const {
  const std::shared_ptr<Job> job = find_job(job_id);
  if (!job) return {};
  std::lock_guard lock(job->mutex);
  return job->errors;
}

std::map<std::int32_t, std::chrono::steady_clock::time_point> RendezvousServiceImpl::joined_ranks(
    const std::string& job_id) const {
  const std::shared_ptr<Job> job = find_job(job_id);
  if (!job) return {};
  std::lock_guard lock(job->mutex);
  return job->joined;
}

bool RendezvousServiceImpl::request_stop(const std::string& job_id, const std::string& reason) {
  const std::shared_ptr<Job> job = find_job(job_id);
  if (!job) return false;
  std::lock_guard lock(job->mutex);
  job->stop_reason = reason;
  return true;
}

bool RendezvousServiceImpl::end_job(const std::string& job_id) {
  std::shared_ptr<Job> job;
  {
    std::lock_guard lock(jobs_mutex_);
    const auto it = jobs_.find(job_id);
    if (it == jobs_.end()) return false;
    job = std::move(it->second);
    jobs_.erase(it);
  }
  std::lock_guard lock(job->mutex);
  job->ended = true;
  job->changed.notify_all();
  return true;
}

void RendezvousServiceImpl::shutdown() {
  shutting_down_.store(true);
  std::vector<std::shared_ptr<Job>> jobs;
  {
    std::lock_guard lock(jobs_mutex_);
    for (const auto& [id, job] : jobs_) jobs.push_back(job);
  }
  jobs_changed_.notify_all();
  // Taking each job's lock before notifying means no waiter can miss the flag.
  for (const auto& job : jobs) {
    std::lock_guard lock(job->mutex);
    job->changed.notify_all();
  }
}

bool RendezvousServiceImpl::wait_for_blocked_calls(const std::string& job_id, int count, milliseconds timeout) const {
  const std::shared_ptr<Job> job = find_job(job_id);
  if (!job) return false;
  std::unique_lock lock(job->mutex);
  return job->changed.wait_for(lock, timeout, [&] { return job->blocked_calls >= count; });
}

std::shared_ptr<RendezvousServiceImpl::Job> RendezvousServiceImpl::await_job(const std::string& job_id,
                                                                          Clock::time_point deadline) const {
  std::unique_lock lock(jobs_mutex_);
  jobs_changed_.wait_until(lock, deadline, [&] { return shutting_down_.load() || jobs_.contains(job_id); });
  const auto it = jobs_.find(job_id);
  return it == jobs_.end() ? nullptr : it->second;
}

std::shared_ptr<RendezvousServiceImpl::Job> RendezvousServiceImpl::find_job(const std::string& job_id) const {
  std::lock_guard lock(jobs_mutex_);
  const auto it = jobs_.find(job_id);
  return it == jobs_.end() ? nullptr : it->second;
}

// Checks the request's context against the status-code contract of rendezvous.proto and,
// when it passes, returns its job locked.
grpc::Status RendezvousServiceImpl::admit(const grpc::ServerContext* server_context, const v1::RankContext* context,
                                          bool has_context, Admitted& out) const {
  if (shutting_down_.load()) return unavailable();
  if (!has_context || context == nullptr) {
    return invalid(
        "the request has no context; set RankContext (job_id from FABRICD_JOB_ID, "
        "generation from FABRICD_RESTART_COUNT, rank from RANK) on every request.");
  }
  if (context->job_id().empty()) {
    return invalid("context.job_id is empty; set it from FABRICD_JOB_ID.");
  }
  if (context->generation() < 0) {
    return invalid("context.generation is " + std::to_string(context->generation()) +
                   "; it must be >= 0 (FABRICD_RESTART_COUNT).");
  }
  if (context->rank() < 0) {
    return invalid("context.rank is " + std::to_string(context->rank()) + "; it must be >= 0 (RANK).");
  }
  // Across nodes a rank may get here before its generation's assignment reached this
  // launcher: a job or generation not begun yet is waited for (see rendezvous.proto).
  const auto not_before = give_up_at(server_context, await_unstarted_);
  std::shared_ptr<Job> job = await_job(context->job_id(), *not_before);
  if (!job) {
    return {grpc::StatusCode::NOT_FOUND,
            "this launcher runs no job " + quoted(context->job_id()) +
                "; check that FABRICD_ENDPOINT points at the daemon that started this rank "
                "(the job may also have ended)."};
  }
  if (!carries_secret(server_context, job->options.secret)) {
    return {grpc::StatusCode::UNAUTHENTICATED,
            "the request does not carry job " + quoted(job->id) + "'s secret: every RendezvousService call needs the " +
                std::string(kJobSecretVariable) + " fabricd gave the job's ranks, as `" + kJobSecretMetadata +
                "` metadata; a process the launcher did not start cannot use the job's store."};
  }
  std::unique_lock lock(job->mutex);
  if (context->rank() >= job->world_size) {
    return invalid("context.rank is " + std::to_string(context->rank()) + " but job " + quoted(job->id) +
                   " has WORLD_SIZE " + std::to_string(job->world_size) + "; ranks run from 0 to " +
                   std::to_string(job->world_size - 1) + ".");
  }
  if (context->generation() > job->generation) {
    job->changed.wait_until(lock, *not_before, [&] {
      return shutting_down_.load() || job->ended || job->generation >= context->generation();
    });
    if (shutting_down_.load()) return unavailable();
  }
  if (context->generation() != job->generation) {
    const bool stale = context->generation() < job->generation;
    return {grpc::StatusCode::FAILED_PRECONDITION,
            "job " + quoted(job->id) + " is in generation " + std::to_string(job->generation) +
                ", not the request's generation " + std::to_string(context->generation()) +
                (stale ? ": this rank is left over from an older generation and will never "
                         "be served; it must exit."
                       : ": that generation has not begun on this launcher; the rank must "
                         "exit (it was started with the wrong FABRICD_RESTART_COUNT).")};
  }
  job->joined.emplace(context->rank(), Clock::now());
  out.job = std::move(job);
  out.lock = std::move(lock);
  out.generation = context->generation();
  return grpc::Status::OK;
}

grpc::Status RendezvousServiceImpl::store_put(Job& job, std::string_view rpc, const std::string& key,
                                              std::string value) const {
  const auto it = job.store.find(key);
  const std::size_t old_bytes = it == job.store.end() ? 0 : key.size() + it->second.size();
  const std::size_t new_bytes = key.size() + value.size();
  if (it == job.store.end() && job.store.size() >= limits_.max_keys_per_job) {
    return {grpc::StatusCode::RESOURCE_EXHAUSTED,
            std::string(rpc) + ": job " + quoted(job.id) + "'s store already holds " +
                std::to_string(job.store.size()) + " keys, the launcher's limit of keys per job store (" +
                std::to_string(limits_.max_keys_per_job) + "); delete keys the job no longer needs."};
  }
  if (job.store_bytes - old_bytes + new_bytes > limits_.max_bytes_per_job) {
    return {grpc::StatusCode::RESOURCE_EXHAUSTED,
            std::string(rpc) + ": writing " + std::to_string(new_bytes) + " bytes at key " + quoted(key) +
                " would take job " + quoted(job.id) + "'s store past the launcher's limit of bytes per job store (" +
                std::to_string(limits_.max_bytes_per_job) + "; it holds " + std::to_string(job.store_bytes) +
                "); store less, or delete keys the job no longer needs."};
  }
  job.store_bytes = job.store_bytes - old_bytes + new_bytes;
  job.store.insert_or_assign(key, std::move(value));
  job.changed.notify_all();
  return grpc::Status::OK;
}

// --- fabric.v1.RendezvousService ----------------------------------------------------

grpc::Status RendezvousServiceImpl::Set(grpc::ServerContext* server_context, const v1::SetRequest* request, v1::SetResponse*) {
  Admitted a;
  if (auto s = admit(server_context, &request->context(), request->has_context(), a); !s.ok()) return s;
  if (auto s = check_key("Set", request->key()); !s.ok()) return s;
  return store_put(*a.job, "Set", request->key(), request->value());
}

grpc::Status RendezvousServiceImpl::Get(grpc::ServerContext* server_context, const v1::GetRequest* request,
                                        v1::GetResponse* response) {
  Admitted a;
  if (auto s = admit(server_context, &request->context(), request->has_context(), a); !s.ok()) return s;
  if (auto s = check_key("Get", request->key()); !s.ok()) return s;
  std::optional<milliseconds> timeout;
  if (auto s = resolve_timeout("Get", request->has_timeout(), request->timeout(), a.job->options.rdzv_timeout, timeout);
      !s.ok()) {
    return s;
  }
  Job& job = *a.job;
  const std::string& key = request->key();
  const WaitEnd end = block_until(job, a.lock, a.generation, shutting_down_, give_up_at(server_context, timeout),
                                  [&] { return job.store.contains(key); });
  if (end != WaitEnd::kReady) {
    return unfinished(end, "Get", job.id, a.generation, job.ended,
                      "Get: key " + quoted(key) + " was not set within " + timeout_text(timeout) + " (job " +
                          quoted(job.id) + ", generation " + std::to_string(a.generation) +
                          "); check that the rank that sets it is alive and gets that far, or raise the "
                          "timeout (JobSpec.rdzv_timeout).");
  }
  response->set_value(job.store.at(key));
  return grpc::Status::OK;
}

grpc::Status RendezvousServiceImpl::Add(grpc::ServerContext* server_context, const v1::AddRequest* request,
                                        v1::AddResponse* response) {
  Admitted a;
  if (auto s = admit(server_context, &request->context(), request->has_context(), a); !s.ok()) return s;
  if (auto s = check_key("Add", request->key()); !s.ok()) return s;
  const std::string& key = request->key();
  std::int64_t current = 0;
  const auto it = a.job->store.find(key);
  if (it != a.job->store.end()) {
    const std::string& text = it->second;
    const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), current);
    if (text.empty() || error != std::errc() || end != text.data() + text.size()) {
      return invalid("Add: key " + quoted(key) + " holds " +
                     (text.size() <= 32 ? quoted(text) : std::to_string(text.size()) + " bytes") +
                     ", not a decimal int64 counter; use a key that only Add writes, or "
                     "Set it to a decimal number first.");
    }
  }
  const std::int64_t amount = request->amount();
  constexpr auto kMax = std::numeric_limits<std::int64_t>::max();
  constexpr auto kMin = std::numeric_limits<std::int64_t>::min();
  if ((amount > 0 && current > kMax - amount) || (amount < 0 && current < kMin - amount)) {
    return {grpc::StatusCode::OUT_OF_RANGE, "Add: " + std::to_string(current) + " + " + std::to_string(amount) +
                                                " at key " + quoted(key) +
                                                " overflows int64; the counter is unchanged."};
  }
  const std::int64_t sum = current + amount;
  if (auto s = store_put(*a.job, "Add", key, std::to_string(sum)); !s.ok()) return s;
  response->set_value(sum);
  return grpc::Status::OK;
}

grpc::Status RendezvousServiceImpl::CompareSet(grpc::ServerContext* server_context, const v1::CompareSetRequest* request,
                                               v1::CompareSetResponse* response) {
  Admitted a;
  if (auto s = admit(server_context, &request->context(), request->has_context(), a); !s.ok()) return s;
  if (auto s = check_key("CompareSet", request->key()); !s.ok()) return s;
  auto& store = a.job->store;
  const auto it = store.find(request->key());
  const bool matches = it == store.end() ? request->expected_value().empty() : it->second == request->expected_value();
  if (matches) {
    if (auto s = store_put(*a.job, "CompareSet", request->key(), request->desired_value()); !s.ok()) return s;
    response->set_value(request->desired_value());
  } else {
    // TCPStore's convention: a missing key answers the expected value.
    response->set_value(it == store.end() ? request->expected_value() : it->second);
  }
  response->set_swapped(matches);
  return grpc::Status::OK;
}

grpc::Status RendezvousServiceImpl::Wait(grpc::ServerContext* server_context, const v1::WaitRequest* request,
                                         v1::WaitResponse*) {
  Admitted a;
  if (auto s = admit(server_context, &request->context(), request->has_context(), a); !s.ok()) return s;
  for (const std::string& key : request->keys()) {
    if (auto s = check_key("Wait", key); !s.ok()) return s;
  }
  std::optional<milliseconds> timeout;
  if (auto s =
          resolve_timeout("Wait", request->has_timeout(), request->timeout(), a.job->options.rdzv_timeout, timeout);
      !s.ok()) {
    return s;
  }
  Job& job = *a.job;
  const auto all_present = [&] {
    for (const std::string& key : request->keys()) {
      if (!job.store.contains(key)) return false;
    }
    return true;
  };
  const WaitEnd end = block_until(job, a.lock, a.generation, shutting_down_, give_up_at(server_context, timeout), all_present);
  if (end == WaitEnd::kReady) return grpc::Status::OK;
  std::vector<std::string> missing;
  if (end == WaitEnd::kTimedOut) {
    for (const std::string& key : request->keys()) {
      if (!job.store.contains(key)) missing.push_back(key);
    }
  }
  return unfinished(end, "Wait", job.id, a.generation, job.ended,
                    "Wait: " + std::to_string(missing.size()) + " of " + std::to_string(request->keys_size()) +
                        " keys were not set within " + timeout_text(timeout) + ": " + join(missing, quoted) + " (job " +
                        quoted(job.id) + ", generation " + std::to_string(a.generation) +
                        "); check that the ranks that set them are alive and get that far, "
                        "or raise the timeout (JobSpec.rdzv_timeout).");
}

grpc::Status RendezvousServiceImpl::Check(grpc::ServerContext* server_context, const v1::CheckRequest* request,
                                          v1::CheckResponse* response) {
  Admitted a;
  if (auto s = admit(server_context, &request->context(), request->has_context(), a); !s.ok()) return s;
  bool ready = true;
  for (const std::string& key : request->keys()) {
    if (auto s = check_key("Check", key); !s.ok()) return s;
    ready = ready && a.job->store.contains(key);
  }
  response->set_ready(ready);
  return grpc::Status::OK;
}

grpc::Status RendezvousServiceImpl::DeleteKey(grpc::ServerContext* server_context, const v1::DeleteKeyRequest* request,
                                              v1::DeleteKeyResponse* response) {
  Admitted a;
  if (auto s = admit(server_context, &request->context(), request->has_context(), a); !s.ok()) return s;
  if (auto s = check_key("DeleteKey", request->key()); !s.ok()) return s;
  const auto it = a.job->store.find(request->key());
  response->set_deleted(it != a.job->store.end());
  if (it != a.job->store.end()) {
    a.job->store_bytes -= it->first.size() + it->second.size();
    a.job->store.erase(it);
  }
  return grpc::Status::OK;
}

grpc::Status RendezvousServiceImpl::NumKeys(grpc::ServerContext* server_context, const v1::NumKeysRequest* request,
                                            v1::NumKeysResponse* response) {
  Admitted a;
  if (auto s = admit(server_context, &request->context(), request->has_context(), a); !s.ok()) return s;
  response->set_num_keys(static_cast<std::int64_t>(a.job->store.size()));
  return grpc::Status::OK;
}

grpc::Status RendezvousServiceImpl::Barrier(grpc::ServerContext* server_context, const v1::BarrierRequest* request,
                                            v1::BarrierResponse*) {
  Admitted a;
  if (auto s = admit(server_context, &request->context(), request->has_context(), a); !s.ok()) return s;
  Job& job = *a.job;
  const std::string label =
      "Barrier " + quoted(request->name()) + " (sequence " + std::to_string(request->sequence()) + ")";
  std::int32_t world_size = request->world_size();
  if (world_size == 0) world_size = job.world_size;
  if (world_size < 0 || world_size > job.world_size) {
    return invalid(label + ": world_size " + std::to_string(request->world_size()) + " is outside 0..WORLD_SIZE (" +
                   std::to_string(job.world_size) +
                   "); pass 0 for every rank of the job, or a count up to WORLD_SIZE.");
  }
  std::optional<milliseconds> timeout;
  if (auto s = resolve_timeout(label, request->has_timeout(), request->timeout(), job.options.rdzv_timeout, timeout);
      !s.ok()) {
    return s;
  }
  const auto key = std::make_pair(request->name(), request->sequence());
  auto [it, created] = job.barriers.try_emplace(key);
  BarrierState& barrier = it->second;
  if (created) {
    barrier.world_size = world_size;
  } else if (barrier.world_size != world_size) {
    return invalid(label + ": this arrival gives world_size " + std::to_string(world_size) +
                   " but an earlier one gave " + std::to_string(barrier.world_size) +
                   "; every rank must pass the same world_size to the same barrier.");
  }
  if (!barrier.complete) {
    barrier.arrived.insert(request->context().rank());
    if (static_cast<std::int64_t>(barrier.arrived.size()) >= barrier.world_size) {
      barrier.complete = true;
      barrier.arrived.clear();  // Only the fact of completion is needed from now on.
      job.changed.notify_all();
    }
  }
  // The barrier map is only replaced with the generation, which block_until checks first,
  // so `barrier` stays valid while ready() can be called.
  const WaitEnd end = block_until(job, a.lock, a.generation, shutting_down_, give_up_at(server_context, timeout),
                                  [&] { return barrier.complete; });
  if (end != WaitEnd::kTimedOut) {
    return unfinished(end, label, job.id, a.generation, job.ended, "");
  }
  std::string arrivals;
  if (barrier.world_size == job.world_size) {
    std::vector<std::int32_t> missing;
    for (std::int32_t r = 0; r < job.world_size; ++r) {
      if (!barrier.arrived.contains(r)) missing.push_back(r);
    }
    arrivals = "ranks " + join(missing, [](std::int32_t r) { return std::to_string(r); }) + " did not arrive";
  } else {
    arrivals = "only " + std::to_string(barrier.arrived.size()) + " of " + std::to_string(barrier.world_size) +
               " ranks arrived";
  }
  return {grpc::StatusCode::DEADLINE_EXCEEDED,
          label + ": " + arrivals + " within " + timeout_text(timeout) + " (job " + quoted(job.id) + ", generation " +
              std::to_string(a.generation) +
              "); check that those ranks are alive and reach the barrier, or raise the "
              "timeout (JobSpec.rdzv_timeout)."};
}

grpc::Status RendezvousServiceImpl::Heartbeat(grpc::ServerContext* server_context, const v1::RankHeartbeatRequest* request,
                                              v1::RankHeartbeatResponse* response) {
  Admitted a;
  if (auto s = admit(server_context, &request->context(), request->has_context(), a); !s.ok()) return s;
  const auto now = Clock::now();
  const auto& since = request->since_progress();
  // Clamped to kForever, so that a rank claiming centuries of silence cannot overflow the clock.
  constexpr std::int64_t kForeverSeconds = std::chrono::duration_cast<std::chrono::seconds>(kForever).count();
  const auto since_progress = std::chrono::seconds(std::clamp<std::int64_t>(since.seconds(), 0, kForeverSeconds)) +
                              std::chrono::nanoseconds(std::clamp<std::int32_t>(since.nanos(), 0, 999'999'999));
  RankHeartbeat beat{.received_at = now,
                     .last_progress = now - std::chrono::duration_cast<Clock::duration>(since_progress),
                     .phase = request->phase()};
  if (request->has_step()) beat.step = request->step();
  if (request->has_epoch()) beat.epoch = request->epoch();
  constexpr int kMaxArrivals = 32;  // what a rank sends; more is not kept
  const int first = std::max(0, request->arrivals_size() - kMaxArrivals);
  for (int i = first; i < request->arrivals_size(); ++i) {
    beat.arrivals.push_back({.step = request->arrivals(i).step(), .unix_nanos = request->arrivals(i).unix_nanos()});
  }
  beat.steps_per_second = request->steps_per_second();
  beat.samples_per_second = request->samples_per_second();
  beat.samples = request->samples();
  constexpr std::size_t kMaxMetrics = 16, kMaxMetricName = 64;  // what a rank sends; more is not kept
  for (const auto& [name, value] : request->metrics()) {
    if (beat.metrics.size() == kMaxMetrics) break;
    beat.metrics.emplace(name.substr(0, kMaxMetricName), value);
  }
  a.job->heartbeats[request->context().rank()] = std::move(beat);

  const auto interval = a.job->options.heartbeat_interval;
  response->mutable_interval()->set_seconds(interval.count() / 1000);
  response->mutable_interval()->set_nanos(static_cast<std::int32_t>(interval.count() % 1000) * 1'000'000);
  if (a.job->stop_reason) {
    response->set_stop_requested(true);
    response->set_stop_reason(*a.job->stop_reason);
  }
  return grpc::Status::OK;
}

grpc::Status RendezvousServiceImpl::ReportError(grpc::ServerContext* server_context, const v1::ReportErrorRequest* request,
                                                v1::ReportErrorResponse*) {
  Admitted a;
  if (auto s = admit(server_context, &request->context(), request->has_context(), a); !s.ok()) return s;
  if (!request->has_error()) {
    return invalid(
        "ReportError: the request has no error; set RankError (at least its "
        "message) to the exception that is ending the rank.");
  }
  a.job->errors[request->context().rank()] = request->error();
  return grpc::Status::OK;
}

}  // namespace fabric::launcher
