#include "fabric/worker/rendezvous_client.h"

#include <grpcpp/grpcpp.h>

#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "fabric/v1/rendezvous.grpc.pb.h"

namespace fabric::worker {

namespace v1 = fabric::v1;
using std::chrono::milliseconds;

namespace {

// Calls that never block on other ranks still cross a process boundary; this bounds them
// so a wedged launcher becomes an error rather than a hang.
constexpr milliseconds kQuickCall = std::chrono::seconds(60);
// A blocking call's gRPC deadline is its own timeout plus this, so that the server's
// DEADLINE_EXCEEDED (which names the missing keys) arrives before the transport's.
constexpr milliseconds kDeadlineSlack = std::chrono::seconds(5);
// A heartbeat that cannot be delivered soon is worthless, and the heartbeat thread must be
// free to stop (at exit) without waiting out kQuickCall.
constexpr milliseconds kHeartbeatCall = std::chrono::seconds(5);

std::int32_t int_variable(const char* name) {
  const char* text = std::getenv(name);
  if (text == nullptr || *text == '\0') {
    throw std::invalid_argument(std::string("FABRICD_ENDPOINT is set but ") + name +
                                " is not: start the program with fabricd run, or unset FABRICD_ENDPOINT.");
  }
  char* end = nullptr;
  errno = 0;
  const long value = std::strtol(text, &end, 10);
  if (errno != 0 || *end != '\0' || value < 0 || value > INT32_MAX) {
    throw std::invalid_argument(std::string(name) + "=" + text + " is not a non-negative integer.");
  }
  return static_cast<std::int32_t>(value);
}

RendezvousErrorKind kind_of(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::DEADLINE_EXCEEDED: return RendezvousErrorKind::kTimeout;
    case grpc::StatusCode::FAILED_PRECONDITION: return RendezvousErrorKind::kStaleGeneration;
    case grpc::StatusCode::ABORTED: return RendezvousErrorKind::kAborted;
    case grpc::StatusCode::UNAVAILABLE: return RendezvousErrorKind::kUnavailable;
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::OUT_OF_RANGE: return RendezvousErrorKind::kInvalid;
    case grpc::StatusCode::NOT_FOUND: return RendezvousErrorKind::kNotFound;
    case grpc::StatusCode::UNAUTHENTICATED: return RendezvousErrorKind::kUnauthenticated;
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return RendezvousErrorKind::kExhausted;
    default: return RendezvousErrorKind::kOther;
  }
}

void set_duration(google::protobuf::Duration* duration, milliseconds value) {
  duration->set_seconds(value.count() / 1000);
  duration->set_nanos(static_cast<std::int32_t>(value.count() % 1000) * 1'000'000);
}

}  // namespace

std::optional<RankIdentity> identity_from_environment() {
  const char* endpoint = std::getenv("FABRICD_ENDPOINT");
  if (endpoint == nullptr || *endpoint == '\0') return std::nullopt;
  const char* job = std::getenv("FABRICD_JOB_ID");
  if (job == nullptr || *job == '\0') {
    throw std::invalid_argument(
        "FABRICD_ENDPOINT is set but FABRICD_JOB_ID is not: start the program with fabricd run, or unset "
        "FABRICD_ENDPOINT.");
  }
  const char* secret = std::getenv("FABRICD_JOB_SECRET");
  if (secret == nullptr || *secret == '\0') {
    throw std::invalid_argument(
        "FABRICD_ENDPOINT is set but FABRICD_JOB_SECRET is not: fabricd gives every rank its job's secret, and "
        "refuses calls without it; start the program with fabricd run (or a fabricd agent), not by hand.");
  }
  const char* store = std::getenv("FABRICD_STORE_ENDPOINT");
  const char* tls_ca = std::getenv("FABRICD_TLS_CA");
  return RankIdentity{.endpoint = endpoint,
                      .store_endpoint = store != nullptr && *store != '\0' ? store : endpoint,
                      .job_id = job,
                      .generation = int_variable("FABRICD_RESTART_COUNT"),
                      .rank = int_variable("RANK"),
                      .secret = secret,
                      .tls_ca = tls_ca != nullptr ? tls_ca : ""};
}

struct RendezvousClient::Impl {
  RankIdentity identity;
  std::unique_ptr<v1::RendezvousService::Stub> stub;

  explicit Impl(RankIdentity id)
      : identity(std::move(id)), stub(v1::RendezvousService::NewStub(open_channel(identity))) {}

  static std::shared_ptr<grpc::Channel> open_channel(const RankIdentity& identity) {
    if (identity.tls_ca.empty()) return grpc::CreateChannel(identity.endpoint, grpc::InsecureChannelCredentials());
    std::ifstream in(identity.tls_ca);
    std::ostringstream pem;
    pem << in.rdbuf();
    if (!in || pem.str().empty()) {
      throw std::invalid_argument("FABRICD_TLS_CA=" + identity.tls_ca +
                                  " cannot be read; it must name the cluster CA's PEM file on this node.");
    }
    grpc::SslCredentialsOptions options;
    options.pem_root_certs = pem.str();
    return grpc::CreateChannel(identity.endpoint, grpc::SslCredentials(options));
  }

  template <typename Request>
  Request request() const {
    Request r;
    auto* context = r.mutable_context();
    context->set_job_id(identity.job_id);
    context->set_generation(identity.generation);
    context->set_rank(identity.rank);
    return r;
  }

  // Runs one RPC; `deadline` nullopt = none (the server's timeout bounds the call).
  template <typename Request, typename Response, typename Method>
  Response call(const char* verb, Method method, const Request& request, std::optional<milliseconds> deadline) {
    grpc::ClientContext context;
    context.AddMetadata("fabricd-job-secret", identity.secret);
    // A channel still connecting (fabricd just started us) is waited for, not failed.
    context.set_wait_for_ready(true);
    if (deadline) context.set_deadline(std::chrono::system_clock::now() + *deadline);
    Response response;
    const grpc::Status status = (stub.get()->*method)(&context, request, &response);
    if (!status.ok()) {
      throw RendezvousError(kind_of(status.error_code()), std::string("fabricd ") + verb + " (" + identity.endpoint +
                                                              "): " + status.error_message());
    }
    return response;
  }

  // The gRPC deadline of a blocking call with this store timeout.
  static std::optional<milliseconds> blocking_deadline(Timeout timeout) {
    if (!timeout || timeout->count() == 0) return std::nullopt;
    return *timeout + kDeadlineSlack;
  }
};

RendezvousClient::RendezvousClient(RankIdentity identity) : impl_(std::make_unique<Impl>(std::move(identity))) {}
RendezvousClient::~RendezvousClient() = default;

const RankIdentity& RendezvousClient::identity() const { return impl_->identity; }

void RendezvousClient::set(const std::string& key, const std::string& value) {
  auto request = impl_->request<v1::SetRequest>();
  request.set_key(key);
  request.set_value(value);
  impl_->call<v1::SetRequest, v1::SetResponse>("Set", &v1::RendezvousService::Stub::Set, request, kQuickCall);
}

std::string RendezvousClient::get(const std::string& key, Timeout timeout) {
  auto request = impl_->request<v1::GetRequest>();
  request.set_key(key);
  if (timeout) set_duration(request.mutable_timeout(), *timeout);
  return impl_
      ->call<v1::GetRequest, v1::GetResponse>("Get", &v1::RendezvousService::Stub::Get, request,
                                              Impl::blocking_deadline(timeout))
      .value();
}

std::int64_t RendezvousClient::add(const std::string& key, std::int64_t amount) {
  auto request = impl_->request<v1::AddRequest>();
  request.set_key(key);
  request.set_amount(amount);
  return impl_->call<v1::AddRequest, v1::AddResponse>("Add", &v1::RendezvousService::Stub::Add, request, kQuickCall)
      .value();
}

std::string RendezvousClient::compare_set(const std::string& key, const std::string& expected,
                                          const std::string& desired) {
  auto request = impl_->request<v1::CompareSetRequest>();
  request.set_key(key);
  request.set_expected_value(expected);
  request.set_desired_value(desired);
  return impl_
      ->call<v1::CompareSetRequest, v1::CompareSetResponse>("CompareSet", &v1::RendezvousService::Stub::CompareSet,
                                                            request, kQuickCall)
      .value();
}

void RendezvousClient::wait(const std::vector<std::string>& keys, Timeout timeout) {
  auto request = impl_->request<v1::WaitRequest>();
  for (const auto& key : keys) request.add_keys(key);
  if (timeout) set_duration(request.mutable_timeout(), *timeout);
  impl_->call<v1::WaitRequest, v1::WaitResponse>("Wait", &v1::RendezvousService::Stub::Wait, request,
                                                 Impl::blocking_deadline(timeout));
}

bool RendezvousClient::check(const std::vector<std::string>& keys) {
  auto request = impl_->request<v1::CheckRequest>();
  for (const auto& key : keys) request.add_keys(key);
  return impl_
      ->call<v1::CheckRequest, v1::CheckResponse>("Check", &v1::RendezvousService::Stub::Check, request, kQuickCall)
      .ready();
}

bool RendezvousClient::delete_key(const std::string& key) {
  auto request = impl_->request<v1::DeleteKeyRequest>();
  request.set_key(key);
  return impl_
      ->call<v1::DeleteKeyRequest, v1::DeleteKeyResponse>("DeleteKey", &v1::RendezvousService::Stub::DeleteKey,
                                                          request, kQuickCall)
      .deleted();
}

std::int64_t RendezvousClient::num_keys() {
  auto request = impl_->request<v1::NumKeysRequest>();
  return impl_
      ->call<v1::NumKeysRequest, v1::NumKeysResponse>("NumKeys", &v1::RendezvousService::Stub::NumKeys, request,
                                                      kQuickCall)
      .num_keys();
}

void RendezvousClient::barrier(const std::string& name, std::int64_t sequence, std::int32_t world_size,
                               Timeout timeout) {
  auto request = impl_->request<v1::BarrierRequest>();
  request.set_name(name);
  request.set_sequence(sequence);
  request.set_world_size(world_size);
  if (timeout) set_duration(request.mutable_timeout(), *timeout);
  impl_->call<v1::BarrierRequest, v1::BarrierResponse>("Barrier", &v1::RendezvousService::Stub::Barrier, request,
                                                       Impl::blocking_deadline(timeout));
}

HeartbeatReply RendezvousClient::heartbeat(const Heartbeat& beat) {
  auto request = impl_->request<v1::RankHeartbeatRequest>();
  if (beat.step) request.set_step(*beat.step);
  if (beat.epoch) request.set_epoch(*beat.epoch);
  request.set_phase(beat.phase);
  set_duration(request.mutable_since_progress(), beat.since_progress);
  for (const StepArrival& arrival : beat.arrivals) {
    v1::StepArrival& sent = *request.add_arrivals();
    sent.set_step(arrival.step);
    sent.set_unix_nanos(arrival.unix_nanos);
  }
  request.set_steps_per_second(beat.steps_per_second);
  request.set_samples_per_second(beat.samples_per_second);
  request.set_samples(beat.samples);
  request.mutable_metrics()->insert(beat.metrics.begin(), beat.metrics.end());
  const auto response = impl_->call<v1::RankHeartbeatRequest, v1::RankHeartbeatResponse>(
      "Heartbeat", &v1::RendezvousService::Stub::Heartbeat, request, kHeartbeatCall);
  const auto& interval = response.interval();
  return {.interval = milliseconds(interval.seconds() * 1000 + interval.nanos() / 1'000'000),
          .stop_requested = response.stop_requested(),
          .stop_reason = response.stop_reason()};
}

void RendezvousClient::report_error(const ErrorReport& error, milliseconds deadline) {
  auto request = impl_->request<v1::ReportErrorRequest>();
  auto* reported = request.mutable_error();
  reported->set_message(error.message);
  reported->set_error_type(error.error_type);
  reported->set_stack_trace(error.stack_trace);
  if (error.step) reported->set_step(*error.step);
  impl_->call<v1::ReportErrorRequest, v1::ReportErrorResponse>(
      "ReportError", &v1::RendezvousService::Stub::ReportError, request, deadline);
}

}  // namespace fabric::worker
