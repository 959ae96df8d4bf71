// Who may talk to fabricd (launcher/security/) and how the Coordinator applies it. The
// coordinator is served by a real in-process grpc::Server on 127.0.0.1:0 over real TLS,
// with the server credentials and Authenticator that `fabricd serve` builds; clients dial
// it with secure_channel as fabricd's own do. A cluster CA, a foreign CA and every
// certificate are made by the library at test time and written to a temp dir (credentials
// take file paths).
//
// Covered: mutual TLS for AgentService (a foreign CA's or an expired node certificate fails
// the handshake, so no handler runs; a client without a node certificate is
// UNAUTHENTICATED); bearer tokens and user certificates for JobService; job ownership and
// admins; the per-user limits on pending jobs and open streams and the message size limit;
// the transport policy of server_credentials; and the pure parts: TokenTable, secrets,
// certificate subjects. Every case asserts the exact status code. Waits are on something
// observable (a WatchJob event, a stream accepted), bounded by a deadline that fails the
// test; nothing sleeps and then asserts.

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "coordinator/coordinator.h"
#include "fabric/v1/agent.grpc.pb.h"
#include "fabric/v1/job.grpc.pb.h"
#include "jobs/job_store.h"
#include "security/authenticator.h"
#include "security/certificates.h"
#include "security/credentials.h"
#include "security/secrets.h"
#include "security/tokens.h"
#include "support/temp_dir.h"

namespace {

namespace v1 = fabric::v1;
using fabric::launcher::Authenticator;
using fabric::launcher::AuthenticatorOptions;
using fabric::launcher::certificate_subject;
using fabric::launcher::CertificateError;
using fabric::launcher::CertificateRequest;
using fabric::launcher::CertificateRole;
using fabric::launcher::Coordinator;
using fabric::launcher::CoordinatorOptions;
using fabric::launcher::CredentialsError;
using fabric::launcher::in_memory_job_store;
using fabric::launcher::is_loopback_listen;
using fabric::launcher::issue_certificate;
using fabric::launcher::KeyPair;
using fabric::launcher::make_certificate_authority;
using fabric::launcher::random_secret;
using fabric::launcher::read_client_token;
using fabric::launcher::secrets_equal;
using fabric::launcher::secure_channel;
using fabric::launcher::server_credentials;
using fabric::launcher::TlsFiles;
using fabric::launcher::TokenFileError;
using fabric::launcher::TokenTable;
using fabric::launcher::TransportSecurity;
using fabric::testing::ScopedTempDir;
using fabric::testing::write_file;
using grpc::StatusCode;
using namespace std::chrono_literals;
using SystemClock = std::chrono::system_clock;

// How long a test waits for something that should happen at once; a failure, not a pause.
constexpr auto kPatience = 20s;

// The coordinator's token file: two users and an admin.
constexpr const char* kAliceToken = "alice-0123456789abcdef";
constexpr const char* kBobToken = "bob-0123456789abcdef0123";
constexpr const char* kAdminToken = "root-0123456789abcdef0123";
const std::string kTokenFile =
    std::string("# users\n") + kAliceToken + " alice\n" + kBobToken + " bob\n" + kAdminToken + " root admin\n";

std::string describe(const grpc::Status& status) {
  return "status " + std::to_string(status.error_code()) + " '" + status.error_message() + "'";
}

// `status` has `code` and, when `part` is given, a message that contains it.
::testing::AssertionResult has_status(const grpc::Status& status, StatusCode code, const std::string& part = "") {
  if (status.error_code() == code && status.error_message().find(part) != std::string::npos) {
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure() << "expected status " << code
                                       << (part.empty() ? "" : " with a message containing '" + part + "'") << ", got "
                                       << describe(status);
}

// What `action` throws as E, or "" (a test failure) when it throws nothing.
template <typename E>
std::string thrown(const std::function<void()>& action) {
  try {
    action();
  } catch (const E& error) {
    return error.what();
  }
  ADD_FAILURE() << "nothing was thrown";
  return "";
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

std::unique_ptr<grpc::ClientContext> call() {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(SystemClock::now() + kPatience);
  return context;
}

v1::JobSpec small_spec() {
  v1::JobSpec spec;
  spec.set_name("train");
  spec.set_program("/opt/train/train");
  spec.set_nproc_per_node(1);
  spec.set_num_nodes(1);
  return spec;
}

// --- JobService and AgentService calls ---------------------------------------------

grpc::Status submit(v1::JobService::Stub& stub, const v1::JobSpec& spec, v1::Job* job = nullptr) {
  v1::SubmitJobRequest request;
  *request.mutable_spec() = spec;
  v1::SubmitJobResponse response;
  const grpc::Status status = stub.SubmitJob(call().get(), request, &response);
  if (job) *job = response.job();
  return status;
}

// Submits a job that must be accepted; returns its id.
std::string submit_ok(v1::JobService::Stub& stub) {
  v1::Job job;
  const grpc::Status status = submit(stub, small_spec(), &job);
  EXPECT_TRUE(status.ok()) << describe(status);
  return job.job_id();
}

grpc::Status get(v1::JobService::Stub& stub, const std::string& job_id, v1::Job* job) {
  v1::GetJobRequest request;
  request.set_job_id(job_id);
  return stub.GetJob(call().get(), request, job);
}

grpc::Status cancel(v1::JobService::Stub& stub, const std::string& job_id, v1::Job* job) {
  v1::CancelJobRequest request;
  request.set_job_id(job_id);
  return stub.CancelJob(call().get(), request, job);
}

// The ids ListJobs answers (newest first); a test failure when it is refused.
std::vector<std::string> listed(v1::JobService::Stub& stub) {
  v1::ListJobsResponse response;
  const grpc::Status status = stub.ListJobs(call().get(), v1::ListJobsRequest(), &response);
  EXPECT_TRUE(status.ok()) << describe(status);
  std::vector<std::string> ids;
  for (const v1::Job& job : response.jobs()) ids.push_back(job.job_id());
  return ids;
}

grpc::Status register_node(v1::AgentService::Stub& stub, const std::string& node_name,
                           v1::RegisterResponse* response = nullptr) {
  v1::RegisterRequest request;
  request.set_node_name(node_name);
  request.set_address("127.0.0.1:29400");
  request.set_slots(1);
  request.set_agent_version("test");
  v1::RegisterResponse local;
  return stub.Register(call().get(), request, response ? response : &local);
}

// How a server stream ends, read to its end.
template <typename Message>
grpc::Status finish(grpc::ClientReader<Message>& reader) {
  Message message;
  while (reader.Read(&message)) {
  }
  return reader.Finish();
}

// How WatchJob / StreamLogs (without follow) of `job_id` end; for calls that are refused.
grpc::Status watch_status(v1::JobService::Stub& stub, const std::string& job_id) {
  v1::WatchJobRequest request;
  request.set_job_id(job_id);
  const auto context = call();
  return finish(*stub.WatchJob(context.get(), request));
}
grpc::Status logs_status(v1::JobService::Stub& stub, const std::string& job_id) {
  v1::StreamLogsRequest request;
  request.set_job_id(job_id);
  const auto context = call();
  return finish(*stub.StreamLogs(context.get(), request));
}

// Watches the job until `done` holds for it; the job then. A test failure when the watch
// ends first (or the patience runs out).
v1::Job watch_until(v1::JobService::Stub& stub, const std::string& job_id,
                    const std::function<bool(const v1::Job&)>& done) {
  grpc::ClientContext context;
  context.set_deadline(SystemClock::now() + kPatience);
  v1::WatchJobRequest request;
  request.set_job_id(job_id);
  const auto reader = stub.WatchJob(&context, request);
  v1::JobEvent event;
  while (reader->Read(&event)) {
    if (done(event.job())) {
      context.TryCancel();
      finish(*reader);
      return event.job();
    }
  }
  ADD_FAILURE() << "job " << job_id << " never got there; the watch ended with " << describe(reader->Finish())
                << "; last seen: " << event.job().ShortDebugString();
  return event.job();
}

// A WatchJob stream held open: open() once its first event (the snapshot) has arrived,
// which the server writes only after it gave the stream a slot.
class HeldWatch {
 public:
  HeldWatch(v1::JobService::Stub& stub, const std::string& job_id) {
    context_.set_deadline(SystemClock::now() + 3 * kPatience);
    v1::WatchJobRequest request;
    request.set_job_id(job_id);
    reader_ = stub.WatchJob(&context_, request);
    v1::JobEvent snapshot;
    if (!reader_->Read(&snapshot)) {
      status_ = reader_->Finish();
      reader_.reset();
    }
  }
  ~HeldWatch() { close(); }
  HeldWatch(const HeldWatch&) = delete;
  HeldWatch& operator=(const HeldWatch&) = delete;

  [[nodiscard]] bool open() const { return reader_ != nullptr; }
  // How the stream ended: the refusal of one that never opened, CANCELLED after close().
  [[nodiscard]] const grpc::Status& status() const { return status_; }
  // Cancels the call and reads it to its end.
  void close() {
    if (!reader_) return;
    context_.TryCancel();
    status_ = finish(*reader_);
    reader_.reset();
  }

 private:
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReader<v1::JobEvent>> reader_;
  grpc::Status status_;
};

// --- The served coordinator --------------------------------------------------------

struct Limits {
  std::size_t max_pending_jobs_per_user = 100;
  std::size_t max_streams_per_user = 32;
  int max_message_bytes = 4 << 20;
};

class SecurityTest : public ::testing::Test {
 protected:
  SecurityTest() {
    write_file(ca_file_, cluster_ca_.certificate_pem);
    server_tls_ = issue("coordinator", CertificateRole::kNode);
  }
  void SetUp() override { serve({}); }
  void TearDown() override { stop(); }

  // (Re)starts the coordinator, with no agents, as `fabricd serve` would: TLS with a node
  // certificate of the cluster CA that verifies client certificates against it, the token
  // file above (or, with tls false: --insecure on loopback, tokens still required).
  void serve(const Limits& limits, bool tls = true) {
    stop();
    tls_ = tls;
    CoordinatorOptions options{.store = in_memory_job_store()};
    options.agent_heartbeat_timeout = 1h;  // agents registered by hand never heartbeat
    options.tick = 10ms;
    options.max_pending_jobs_per_user = limits.max_pending_jobs_per_user;
    options.max_streams_per_user = limits.max_streams_per_user;
    options.authenticator = std::make_shared<const Authenticator>(
        AuthenticatorOptions{.tokens = TokenTable::parse(kTokenFile, "tokens"), .tls = tls, .open = false});
    coordinator_ = std::make_unique<Coordinator>(std::move(options));
    const TransportSecurity security =
        tls ? TransportSecurity{.tls = server_tls_} : TransportSecurity{.insecure = true};
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", server_credentials(security, "test", "127.0.0.1:0"), &port);
    builder.SetMaxReceiveMessageSize(limits.max_message_bytes);
    builder.RegisterService(&coordinator_->job_service());
    builder.RegisterService(&coordinator_->agent_service());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port, 0);
    address_ = "127.0.0.1:" + std::to_string(port);
  }

  void stop() {
    if (coordinator_) coordinator_->shutdown();
    if (server_) server_->Shutdown(SystemClock::now() + 10s);
    server_.reset();
    coordinator_.reset();
  }

  // A certificate for `request` signed by `ca`, written to files, with the cluster CA's
  // certificate to verify the server by.
  TlsFiles issue(const CertificateRequest& request, const KeyPair& ca) {
    const KeyPair pair = issue_certificate(ca, request);
    const std::string stem = dir_ / (request.common_name + "-" + std::to_string(++issued_));
    write_file(stem + ".crt", pair.certificate_pem);
    write_file(stem + ".key", pair.private_key_pem);
    return {.certificate = stem + ".crt", .private_key = stem + ".key", .ca = ca_file_};
  }
  TlsFiles issue(const std::string& name, CertificateRole role) {
    return issue({.common_name = name, .role = role}, cluster_ca_);
  }
  // Only the CA: the client verifies the server and presents no certificate.
  TlsFiles ca_only() const { return {.ca = ca_file_}; }

  std::shared_ptr<grpc::Channel> channel(const TlsFiles& tls, const std::string& token = "") {
    const TransportSecurity security = tls_ ? TransportSecurity{.tls = tls} : TransportSecurity{.insecure = true};
    return secure_channel(address_, security, token);
  }
  std::unique_ptr<v1::JobService::Stub> jobs_as(const std::string& token) {
    return v1::JobService::NewStub(channel(ca_only(), token));
  }
  std::unique_ptr<v1::JobService::Stub> jobs_with(const TlsFiles& certificate) {
    return v1::JobService::NewStub(channel(certificate));
  }
  std::unique_ptr<v1::AgentService::Stub> agents_with(const TlsFiles& certificate) {
    return v1::AgentService::NewStub(channel(certificate));
  }

  // What a 1-node job submitted now says once the coordinator has tried to place it:
  // RUNNING on a registered node, or PENDING with how many nodes are connected. This is
  // how a test sees whether a Register took effect.
  v1::Job placed_job() {
    const auto admin = jobs_as(kAdminToken);
    const std::string job_id = submit_ok(*admin);
    return watch_until(*admin, job_id, [](const v1::Job& job) {
      return job.state() != v1::JOB_STATE_PENDING || job.message() != "waiting to be placed";
    });
  }
  void expect_no_node_registered() {
    const v1::Job job = placed_job();
    EXPECT_EQ(job.state(), v1::JOB_STATE_PENDING) << job.ShortDebugString();
    EXPECT_TRUE(contains(job.message(), "0 of the 0 connected")) << job.message();
  }

  ScopedTempDir dir_;
  const KeyPair cluster_ca_ = make_certificate_authority("test-cluster", 24h);
  const std::string ca_file_ = dir_ / "ca.crt";
  TlsFiles server_tls_;
  int issued_ = 0;
  bool tls_ = true;
  std::unique_ptr<Coordinator> coordinator_;
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
};

// --- AgentService: mutual TLS ------------------------------------------------------

TEST_F(SecurityTest, NodeCertificateOfTheClusterCaRegisters) {
  const auto agents = agents_with(issue("node-a", CertificateRole::kNode));
  v1::RegisterResponse response;
  const grpc::Status status = register_node(*agents, "node-a", &response);
  ASSERT_TRUE(status.ok()) << describe(status);
  EXPECT_EQ(response.agent_id().rfind("agent-node-a-", 0), 0u) << response.agent_id();
  const v1::Job job = placed_job();
  EXPECT_EQ(job.state(), v1::JOB_STATE_RUNNING) << job.ShortDebugString();
  EXPECT_EQ(std::vector<std::string>(job.nodes().begin(), job.nodes().end()), std::vector<std::string>{"node-a"});
}

TEST_F(SecurityTest, NodeCertificateOfAForeignCaIsRefusedInTheHandshake) {
  const KeyPair foreign_ca = make_certificate_authority("other-cluster", 24h);
  const auto agents = agents_with(issue({.common_name = "intruder", .role = CertificateRole::kNode}, foreign_ca));
  EXPECT_TRUE(has_status(register_node(*agents, "intruder"), StatusCode::UNAVAILABLE));
  expect_no_node_registered();
}

TEST_F(SecurityTest, ExpiredNodeCertificateIsRefusedInTheHandshake) {
  const auto now = SystemClock::now();
  const TlsFiles expired = issue(
      {.common_name = "old-node", .role = CertificateRole::kNode, .not_before = now - 48h, .not_after = now - 24h},
      cluster_ca_);
  EXPECT_TRUE(has_status(register_node(*agents_with(expired), "old-node"), StatusCode::UNAVAILABLE));
  expect_no_node_registered();
}

TEST_F(SecurityTest, AgentServiceWithoutAClientCertificateIsUnauthenticated) {
  EXPECT_TRUE(has_status(register_node(*agents_with(ca_only()), "node-a"), StatusCode::UNAUTHENTICATED,
                         "AgentService is for node agents"));
  expect_no_node_registered();
}

TEST_F(SecurityTest, AgentServiceRefusesAUserCertificate) {
  const auto agents = agents_with(issue("alice", CertificateRole::kUser));
  EXPECT_TRUE(
      has_status(register_node(*agents, "alice"), StatusCode::UNAUTHENTICATED, "AgentService is for node agents"));
  expect_no_node_registered();
}

TEST_F(SecurityTest, ANodeCertificateCannotRegisterAnotherNode) {
  const auto agents = agents_with(issue("node-b", CertificateRole::kNode));
  EXPECT_TRUE(has_status(register_node(*agents, "node-a"), StatusCode::PERMISSION_DENIED,
                         "the node certificate of 'node-b' cannot register node 'node-a'"));
  expect_no_node_registered();
}

TEST_F(SecurityTest, ANodeCannotSpeakForAnotherNodesSession) {
  v1::RegisterResponse registered;
  ASSERT_TRUE(register_node(*agents_with(issue("node-a", CertificateRole::kNode)), "node-a", &registered).ok());
  const auto other = agents_with(issue("node-b", CertificateRole::kNode));
  v1::AgentHeartbeatRequest heartbeat;
  heartbeat.set_agent_id(registered.agent_id());
  v1::AgentHeartbeatResponse response;
  EXPECT_TRUE(has_status(other->Heartbeat(call().get(), heartbeat, &response), StatusCode::PERMISSION_DENIED,
                         "belongs to node 'node-a', not to 'node-b'"));
  v1::ReportRankExitRequest exit;
  exit.set_agent_id(registered.agent_id());
  v1::ReportRankExitResponse exit_response;
  EXPECT_TRUE(has_status(other->ReportRankExit(call().get(), exit, &exit_response), StatusCode::PERMISSION_DENIED));
}

// --- JobService: tokens and user certificates ----------------------------------------

TEST_F(SecurityTest, JobServiceWithoutCredentialsIsUnauthenticated) {
  v1::ListJobsResponse response;
  EXPECT_TRUE(has_status(jobs_with(ca_only())->ListJobs(call().get(), v1::ListJobsRequest(), &response),
                         StatusCode::UNAUTHENTICATED, "no credentials"));
}

TEST_F(SecurityTest, WrongTokenIsUnauthenticatedAndNotQuoted) {
  const std::string wrong = "wrong-0123456789abcdef0123";
  v1::ListJobsResponse response;
  const grpc::Status status = jobs_as(wrong)->ListJobs(call().get(), v1::ListJobsRequest(), &response);
  EXPECT_TRUE(has_status(status, StatusCode::UNAUTHENTICATED, "not one this coordinator accepts"));
  EXPECT_FALSE(contains(status.error_message(), wrong)) << status.error_message();
}

TEST_F(SecurityTest, MalformedAuthorizationIsUnauthenticated) {
  const auto jobs = jobs_with(ca_only());
  const auto context = call();
  context->AddMetadata("authorization", std::string("Basic ") + kAliceToken);  // "bearer" in any case is fine
  v1::ListJobsResponse response;
  const grpc::Status status = jobs->ListJobs(context.get(), {}, &response);
  EXPECT_TRUE(has_status(status, StatusCode::UNAUTHENTICATED, "must be `Bearer TOKEN`"));
  EXPECT_FALSE(contains(status.error_message(), kAliceToken)) << status.error_message();
}

TEST_F(SecurityTest, ValidTokenAuthenticatesAsItsUser) {
  v1::Job job;
  const grpc::Status status = submit(*jobs_as(kAliceToken), small_spec(), &job);
  ASSERT_TRUE(status.ok()) << describe(status);
  EXPECT_EQ(job.owner(), "alice");
}

TEST_F(SecurityTest, UserCertificateAuthenticatesAsItsCommonName) {
  v1::Job job;
  const grpc::Status status = submit(*jobs_with(issue("alice", CertificateRole::kUser)), small_spec(), &job);
  ASSERT_TRUE(status.ok()) << describe(status);
  EXPECT_EQ(job.owner(), "alice");
  // The same user as alice's token: she sees the job, bob does not.
  EXPECT_EQ(listed(*jobs_as(kAliceToken)), std::vector<std::string>{job.job_id()});
  EXPECT_TRUE(listed(*jobs_as(kBobToken)).empty());
}

TEST_F(SecurityTest, NodeCertificateIsNoJobServiceClient) {
  v1::ListJobsResponse response;
  const auto jobs = jobs_with(issue("node-a", CertificateRole::kNode));
  EXPECT_TRUE(has_status(jobs->ListJobs(call().get(), v1::ListJobsRequest(), &response), StatusCode::UNAUTHENTICATED,
                         "is not a user's"));
}

// --- Ownership ---------------------------------------------------------------------

TEST_F(SecurityTest, AnotherUsersJobIsPermissionDenied) {
  const auto bob = jobs_as(kBobToken);
  const std::string job_id = submit_ok(*bob);
  const auto alice = jobs_as(kAliceToken);
  const std::string denied = "belongs to another user; 'alice' may only";
  v1::Job job;
  EXPECT_TRUE(has_status(get(*alice, job_id, &job), StatusCode::PERMISSION_DENIED, denied));
  EXPECT_TRUE(has_status(cancel(*alice, job_id, &job), StatusCode::PERMISSION_DENIED, denied));
  EXPECT_TRUE(has_status(watch_status(*alice, job_id), StatusCode::PERMISSION_DENIED, denied));
  EXPECT_TRUE(has_status(logs_status(*alice, job_id), StatusCode::PERMISSION_DENIED, denied));
  // The refused cancel changed nothing.
  ASSERT_TRUE(get(*bob, job_id, &job).ok());
  EXPECT_EQ(job.state(), v1::JOB_STATE_PENDING);
  EXPECT_EQ(job.owner(), "bob");
}

TEST_F(SecurityTest, ListJobsShowsOnlyTheCallersJobs) {
  const auto alice = jobs_as(kAliceToken);
  const auto bob = jobs_as(kBobToken);
  const std::string first = submit_ok(*alice);
  const std::string bobs = submit_ok(*bob);
  const std::string second = submit_ok(*alice);
  EXPECT_EQ(listed(*alice), (std::vector<std::string>{second, first}));
  EXPECT_EQ(listed(*bob), std::vector<std::string>{bobs});
}

TEST_F(SecurityTest, AdminSeesEveryonesJobsAndMayCancelThem) {
  const std::string alices = submit_ok(*jobs_as(kAliceToken));
  const auto bob = jobs_as(kBobToken);
  const std::string bobs = submit_ok(*bob);
  const auto admin = jobs_as(kAdminToken);
  EXPECT_EQ(listed(*admin), (std::vector<std::string>{bobs, alices}));
  v1::Job job;
  ASSERT_TRUE(get(*admin, bobs, &job).ok());
  EXPECT_EQ(job.owner(), "bob");
  const grpc::Status status = cancel(*admin, bobs, &job);
  ASSERT_TRUE(status.ok()) << describe(status);
  EXPECT_EQ(job.state(), v1::JOB_STATE_CANCELLED);
  ASSERT_TRUE(get(*bob, bobs, &job).ok());
  EXPECT_EQ(job.state(), v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(job.owner(), "bob");  // an admin's cancel does not make the job the admin's
}

TEST_F(SecurityTest, AdminCertificateIsAnAdmin) {
  const std::string bobs = submit_ok(*jobs_as(kBobToken));
  const auto admin = jobs_with(issue("carol", CertificateRole::kAdmin));
  EXPECT_EQ(listed(*admin), std::vector<std::string>{bobs});
  v1::Job job;
  EXPECT_TRUE(get(*admin, bobs, &job).ok());
  EXPECT_EQ(job.owner(), "bob");
}

// --- Limits ------------------------------------------------------------------------

TEST_F(SecurityTest, PendingJobsPerUserAreLimited) {
  serve({.max_pending_jobs_per_user = 2});  // no agents: every job stays PENDING
  const auto alice = jobs_as(kAliceToken);
  const std::string first = submit_ok(*alice);
  submit_ok(*alice);
  EXPECT_TRUE(has_status(submit(*alice, small_spec()), StatusCode::RESOURCE_EXHAUSTED,
                         "the limit of pending jobs per user (2)"));
  // Another user is not affected.
  EXPECT_TRUE(submit(*jobs_as(kBobToken), small_spec()).ok());
  // A job that leaves PENDING frees its place.
  v1::Job job;
  ASSERT_TRUE(cancel(*alice, first, &job).ok());
  const grpc::Status status = submit(*alice, small_spec());
  EXPECT_TRUE(status.ok()) << describe(status);
}

TEST_F(SecurityTest, OpenStreamsPerUserAreLimited) {
  serve({.max_streams_per_user = 2});
  const auto alice = jobs_as(kAliceToken);
  const std::string job_id = submit_ok(*alice);
  HeldWatch first(*alice, job_id);
  HeldWatch second(*alice, job_id);
  ASSERT_TRUE(first.open()) << describe(first.status());
  ASSERT_TRUE(second.open()) << describe(second.status());
  const std::string limit = "the limit of streams per client (2)";
  HeldWatch third(*alice, job_id);
  EXPECT_FALSE(third.open());
  EXPECT_TRUE(has_status(third.status(), StatusCode::RESOURCE_EXHAUSTED, limit));
  // StreamLogs counts against the same limit.
  EXPECT_TRUE(has_status(logs_status(*alice, job_id), StatusCode::RESOURCE_EXHAUSTED, limit));
  // Another user (an admin, who may watch alice's job) is not affected.
  HeldWatch admins(*jobs_as(kAdminToken), job_id);
  EXPECT_TRUE(admins.open()) << describe(admins.status());
}

TEST_F(SecurityTest, ClosingAStreamFreesItsSlot) {
  serve({.max_streams_per_user = 1});
  const auto alice = jobs_as(kAliceToken);
  const std::string job_id = submit_ok(*alice);
  HeldWatch held(*alice, job_id);
  ASSERT_TRUE(held.open()) << describe(held.status());
  ASSERT_FALSE(HeldWatch(*alice, job_id).open());
  held.close();
  EXPECT_TRUE(has_status(held.status(), StatusCode::CANCELLED));
  // The server gives the slot back when its handler sees the cancellation (at its next
  // look, within half a second): try again until a stream is accepted.
  const auto deadline = std::chrono::steady_clock::now() + kPatience;
  for (;;) {
    HeldWatch again(*alice, job_id);
    if (again.open()) break;
    ASSERT_TRUE(has_status(again.status(), StatusCode::RESOURCE_EXHAUSTED, "the limit of streams per client (1)"));
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "the closed stream's slot was never given back";
    std::this_thread::sleep_for(10ms);  // between tries, not before an assertion
  }
}

TEST_F(SecurityTest, RequestLargerThanTheMaximumMessageSizeIsRefused) {
  serve({.max_message_bytes = 4096});
  const auto alice = jobs_as(kAliceToken);
  v1::JobSpec large = small_spec();
  large.add_args(std::string(8192, 'x'));
  EXPECT_TRUE(has_status(submit(*alice, large), StatusCode::RESOURCE_EXHAUSTED, "larger than max"));
  EXPECT_TRUE(submit(*alice, small_spec()).ok());
}

// --- Transport policy ----------------------------------------------------------------

TEST_F(SecurityTest, PlainTextOnLoopbackStillNeedsATokenForJobService) {
  serve({}, /*tls=*/false);
  v1::ListJobsResponse response;
  EXPECT_TRUE(has_status(jobs_as("")->ListJobs(call().get(), v1::ListJobsRequest(), &response),
                         StatusCode::UNAUTHENTICATED, "no credentials"));
  EXPECT_TRUE(listed(*jobs_as(kAliceToken)).empty());
  // What --insecure gives up: AgentService is not authenticated.
  EXPECT_TRUE(register_node(*v1::AgentService::NewStub(channel({})), "node-a").ok());
}

TEST(TransportPolicy, InsecureRefusesANonLoopbackListenAddress) {
  const std::string message =
      thrown<CredentialsError>([] { server_credentials({.insecure = true}, "fabricd serve", "0.0.0.0:0"); });
  EXPECT_TRUE(contains(message, "loopback only, not on 0.0.0.0:0")) << message;
}

TEST(TransportPolicy, InsecureOnLoopbackIsAllowed) {
  EXPECT_NE(server_credentials({.insecure = true}, "fabricd serve", "127.0.0.1:0"), nullptr);
  EXPECT_NE(server_credentials({.insecure = true}, "fabricd serve", "[::1]:7070"), nullptr);
}

TEST(TransportPolicy, TlsWithoutFilesNamesTheFlags) {
  const std::string message = thrown<CredentialsError>([] { server_credentials({}, "fabricd serve", "0.0.0.0:7070"); });
  EXPECT_TRUE(contains(message, "fabricd serve: pass --tls-cert, --tls-key and --tls-ca")) << message;
}

TEST(TransportPolicy, InsecureWithTlsFilesIsAContradiction) {
  const std::string message = thrown<CredentialsError>([] {
    server_credentials({.tls = {.certificate = "a.crt", .private_key = "a.key", .ca = "ca.crt"}, .insecure = true},
                       "fabricd serve", "127.0.0.1:7070");
  });
  EXPECT_TRUE(contains(message, "--insecure and --tls-* contradict each other")) << message;
}

TEST(TransportPolicy, UnreadableTlsFileNamesItsFlagAndPath) {
  ScopedTempDir dir;
  write_file(dir / "a.crt", "certificate");
  write_file(dir / "a.key", "key");
  const std::string missing = dir / "missing-ca.crt";
  const std::string message = thrown<CredentialsError>([&] {
    server_credentials({.tls = {.certificate = dir / "a.crt", .private_key = dir / "a.key", .ca = missing}},
                       "fabricd serve", "127.0.0.1:7070");
  });
  EXPECT_TRUE(contains(message, "--tls-ca " + missing + ": cannot read")) << message;
}

TEST(TransportPolicy, LoopbackListenAddresses) {
  EXPECT_TRUE(is_loopback_listen("127.0.0.1:7070"));
  EXPECT_TRUE(is_loopback_listen("127.1.2.3:0"));
  EXPECT_TRUE(is_loopback_listen("localhost:7070"));
  EXPECT_TRUE(is_loopback_listen("[::1]:7070"));
  EXPECT_FALSE(is_loopback_listen("0.0.0.0:7070"));
  EXPECT_FALSE(is_loopback_listen(":7070"));
  EXPECT_FALSE(is_loopback_listen("10.0.0.1:7070"));
  EXPECT_FALSE(is_loopback_listen("[::]:7070"));
  // A name is not an address: 127.example.com may resolve anywhere.
  EXPECT_FALSE(is_loopback_listen("127.example.com:7070"));
}

// --- TokenTable ----------------------------------------------------------------------

TEST(TokenTable, ShortTokenNamesItsLine) {
  const std::string message =
      thrown<TokenFileError>([] { TokenTable::parse("# tokens\n\nshort-token bob\n", "tokens.txt"); });
  EXPECT_TRUE(contains(message, "tokens.txt:3: the token of user 'bob' is shorter than 16")) << message;
  EXPECT_FALSE(contains(message, "short-token")) << message;
}

TEST(TokenTable, DuplicateTokenNamesItsLineAndBothUsers) {
  const std::string message = thrown<TokenFileError>(
      [] { TokenTable::parse(std::string(kAliceToken) + " alice\n" + kAliceToken + " bob\n", "tokens.txt"); });
  EXPECT_TRUE(contains(message, "tokens.txt:2: user 'bob' has the same token as user 'alice'")) << message;
  EXPECT_FALSE(contains(message, kAliceToken)) << message;
}

TEST(TokenTable, BadRoleNamesItsLine) {
  const std::string message = thrown<TokenFileError>(
      [] { TokenTable::parse(std::string(kAliceToken) + " alice\n" + kBobToken + " bob root\n", "tokens.txt"); });
  EXPECT_TRUE(contains(message, "tokens.txt:2: expected `TOKEN USER` or `TOKEN USER admin`")) << message;
}

TEST(TokenTable, MissingUserNamesItsLine) {
  const std::string message = thrown<TokenFileError>([] { TokenTable::parse(kAliceToken, "tokens.txt"); });
  EXPECT_TRUE(contains(message, "tokens.txt:1: expected `TOKEN USER`")) << message;
}

TEST(TokenTable, SkipsCommentsAndBlankLines) {
  const TokenTable table =
      TokenTable::parse("# comment\n\n   \n  # indented comment\n" + std::string(kAliceToken) + " alice\n", "t");
  EXPECT_EQ(table.size(), 1u);
}

TEST(TokenTable, FindsTheUserAndWhetherAdmin) {
  const TokenTable table = TokenTable::parse(kTokenFile, "tokens");
  ASSERT_EQ(table.size(), 3u);
  const auto alice = table.find(kAliceToken);
  ASSERT_TRUE(alice.has_value());
  EXPECT_EQ(alice->user, "alice");
  EXPECT_FALSE(alice->admin);
  const auto root = table.find(kAdminToken);
  ASSERT_TRUE(root.has_value());
  EXPECT_EQ(root->user, "root");
  EXPECT_TRUE(root->admin);
}

TEST(TokenTable, UnknownTokenIsNotFound) {
  const TokenTable table = TokenTable::parse(kTokenFile, "tokens");
  EXPECT_FALSE(table.find("unknown-0123456789abcdef").has_value());
  EXPECT_FALSE(table.find(std::string(kAliceToken) + "x").has_value());
  EXPECT_FALSE(table.find("").has_value());
  EXPECT_FALSE(TokenTable().find(kAliceToken).has_value());
}

TEST(TokenTable, ReadClientTokenTrims) {
  ScopedTempDir dir;
  write_file(dir / "token", "# my token\n\n  \t" + std::string(kAliceToken) + " \t\r\n");
  EXPECT_EQ(read_client_token(dir / "token"), kAliceToken);
}

TEST(TokenTable, ReadClientTokenWithoutATokenThrows) {
  ScopedTempDir dir;
  write_file(dir / "token", "# nothing here\n\n");
  const std::string message = thrown<TokenFileError>([&] { read_client_token(dir / "token"); });
  EXPECT_TRUE(contains(message, "holds no token")) << message;
}

// --- Secrets -------------------------------------------------------------------------

TEST(Secrets, RandomSecretIs64LowerCaseHexDigits) {
  const std::string secret = random_secret();
  EXPECT_EQ(secret.size(), 64u);
  EXPECT_TRUE(std::all_of(secret.begin(), secret.end(), [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
  })) << secret;
}

TEST(Secrets, TwoRandomSecretsDiffer) { EXPECT_NE(random_secret(), random_secret()); }

TEST(Secrets, SecretsEqual) {
  EXPECT_TRUE(secrets_equal(kAliceToken, kAliceToken));
  EXPECT_TRUE(secrets_equal("", ""));
  EXPECT_FALSE(secrets_equal(kAliceToken, kBobToken));
  EXPECT_FALSE(secrets_equal("abc", "abd"));
  EXPECT_FALSE(secrets_equal("abc", "abcd"));  // a prefix is not equal
  EXPECT_FALSE(secrets_equal("", "a"));
}

// --- Certificates ----------------------------------------------------------------------

TEST(Certificates, SubjectNamesTheCommonNameAndRole) {
  const KeyPair ca = make_certificate_authority("test-cluster", 24h);
  for (const CertificateRole role : {CertificateRole::kNode, CertificateRole::kUser, CertificateRole::kAdmin}) {
    const auto subject =
        certificate_subject(issue_certificate(ca, {.common_name = "alice", .role = role}).certificate_pem);
    ASSERT_TRUE(subject.has_value());
    EXPECT_EQ(subject->common_name, "alice");
    EXPECT_EQ(subject->role, role) << fabric::launcher::role_name(role);
  }
}

TEST(Certificates, CaCertificateHasNoRole) {
  const auto subject = certificate_subject(make_certificate_authority("test-cluster", 24h).certificate_pem);
  ASSERT_TRUE(subject.has_value());
  EXPECT_EQ(subject->common_name, "test-cluster");
  EXPECT_FALSE(subject->role.has_value());
}

TEST(Certificates, NotACertificateHasNoSubject) { EXPECT_FALSE(certificate_subject("not a PEM").has_value()); }

TEST(Certificates, IssuingWithAnotherCasKeyIsRefused) {
  const KeyPair ca = make_certificate_authority("test-cluster", 24h);
  const KeyPair other = make_certificate_authority("other-cluster", 24h);
  const std::string message = thrown<CertificateError>([&] {
    issue_certificate({.certificate_pem = ca.certificate_pem, .private_key_pem = other.private_key_pem},
                      {.common_name = "node-a"});
  });
  EXPECT_TRUE(contains(message, "the CA key does not belong to the CA certificate")) << message;
}

}  // namespace
