// The Coordinator (launcher/coordinator/coordinator.h) served by a real in-process
// grpc::Server on 127.0.0.1:0 and called through real stubs: JobService as a client uses
// it, AgentService driven by hand by fake agents (Register, Heartbeat, an assignment
// stream read on a thread into a queue, ReportRankExit, PushLogs). Agent heartbeat
// timeouts run on an injected fake clock that the tests advance; the reconcile loop ticks
// every 10 ms. Every wait is on something observable (an assignment, a watch event, a job
// polled through GetJob) and bounded by a deadline that fails the test, never a pause.

#include "coordinator/coordinator.h"

#include <google/protobuf/util/message_differencer.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "fabric/v1/agent.grpc.pb.h"
#include "fabric/v1/job.grpc.pb.h"
#include "jobs/job_spec.h"
#include "etcd/etcd_client.h"
#include "etcd/etcd_job_store.h"
#include "jobs/job_store.h"
#include "support/etcd_cluster.h"
#include "support/temp_dir.h"

namespace {

namespace v1 = fabric::v1;
using fabric::launcher::Coordinator;
using fabric::launcher::CoordinatorOptions;
using fabric::launcher::open_sqlite_job_store;
using fabric::launcher::set_duration;
using fabric::launcher::to_milliseconds;
using fabric::testing::ScopedTempDir;
using google::protobuf::util::MessageDifferencer;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// How long a test waits for something that should happen at once; a failure, not a pause.
constexpr auto kPatience = 20s;
constexpr auto kHeartbeatTimeout = 5s;

std::unique_ptr<grpc::ClientContext> client() {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + 60s);
  return context;
}

std::string describe(const grpc::Status& status) {
  return std::to_string(status.error_code()) + " " + status.error_message();
}

// The coordinator's clock: only moves when a test moves it.
class FakeClock {
 public:
  Clock::time_point now() const {
    std::lock_guard lock(mutex_);
    return now_;
  }
  void advance(Clock::duration by) {
    std::lock_guard lock(mutex_);
    now_ += by;
  }

 private:
  mutable std::mutex mutex_;
  Clock::time_point now_ = Clock::now();
};

// A thread-safe queue the stream readers fill and the tests wait on.
template <typename T>
class Inbox {
 public:
  void push(T item) {
    {
      std::lock_guard lock(mutex_);
      items_.push_back(std::move(item));
    }
    changed_.notify_all();
  }
  void close(grpc::Status status) {
    {
      std::lock_guard lock(mutex_);
      status_ = std::move(status);
    }
    changed_.notify_all();
  }
  // The next item, or nullopt when none comes within the patience (or the stream ended).
  std::optional<T> pop() {
    std::unique_lock lock(mutex_);
    changed_.wait_for(lock, kPatience, [&] { return !items_.empty() || status_.has_value(); });
    if (items_.empty()) return std::nullopt;
    T item = std::move(items_.front());
    items_.pop_front();
    return item;
  }
  std::size_t size() const {
    std::lock_guard lock(mutex_);
    return items_.size();
  }
  // How the stream ended; nullopt if it has not within the patience.
  std::optional<grpc::Status> ended() {
    std::unique_lock lock(mutex_);
    changed_.wait_for(lock, kPatience, [&] { return status_.has_value(); });
    return status_;
  }

 private:
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<T> items_;
  std::optional<grpc::Status> status_;
};

// A node agent played by hand.
class FakeAgent {
 public:
  FakeAgent(std::shared_ptr<v1::AgentService::Stub> stub, std::string node_name, std::string address, int slots,
            int free_port = 0)
      : stub_(std::move(stub)),
        node_name_(std::move(node_name)),
        address_(std::move(address)),
        slots_(slots),
        free_port_(free_port) {}
  ~FakeAgent() { close_stream(); }
  FakeAgent(const FakeAgent&) = delete;
  FakeAgent& operator=(const FakeAgent&) = delete;

  const std::string& id() const { return agent_id_; }
  const std::string& node_name() const { return node_name_; }
  void set_id(const std::string& agent_id) { agent_id_ = agent_id; }
  // After a coordinator restart: talk to the new one.
  void use(std::shared_ptr<v1::AgentService::Stub> stub) { stub_ = std::move(stub); }

  grpc::Status register_agent(v1::RegisterResponse* response = nullptr) {
    v1::RegisterRequest request;
    request.set_node_name(node_name_);
    request.set_address(address_);
    request.set_slots(slots_);
    request.set_agent_version("test");
    request.set_free_port(free_port_);
    v1::RegisterResponse local;
    v1::RegisterResponse& out = response ? *response : local;
    grpc::Status status = stub_->Register(client().get(), request, &out);
    if (status.ok()) agent_id_ = out.agent_id();
    return status;
  }

  // Registers and opens the assignment stream; fails the test if either is refused.
  void join() {
    const grpc::Status status = register_agent();
    ASSERT_TRUE(status.ok()) << node_name_ << ": " << describe(status);
    open_stream();
  }

  grpc::Status heartbeat(const std::vector<v1::RunningRanks>& running = {}, int free_port = 0) {
    v1::AgentHeartbeatRequest request;
    request.set_agent_id(agent_id_);
    for (const auto& r : running) *request.add_running() = r;
    request.set_free_port(free_port);
    v1::AgentHeartbeatResponse response;
    return stub_->Heartbeat(client().get(), request, &response);
  }

  void open_stream() {
    close_stream();
    inbox_ = std::make_shared<Inbox<v1::Assignment>>();
    context_ = std::make_shared<grpc::ClientContext>();
    context_->set_deadline(std::chrono::system_clock::now() + 300s);
    reader_ = std::thread([stub = stub_, context = context_, inbox = inbox_, id = agent_id_] {
      v1::StreamAssignmentsRequest request;
      request.set_agent_id(id);
      auto reader = stub->StreamAssignments(context.get(), request);
      v1::Assignment assignment;
      while (reader->Read(&assignment)) inbox->push(assignment);
      inbox->close(reader->Finish());
    });
  }
  void close_stream() {
    if (context_) context_->TryCancel();
    if (reader_.joinable()) reader_.join();
    context_.reset();
  }

  // The next assignment, which must be a StartRanks (or a StopJob).
  v1::StartRanks expect_start() {
    const auto assignment = inbox_ ? inbox_->pop() : std::nullopt;
    if (!assignment) {
      ADD_FAILURE() << node_name_ << ": no StartRanks within " << kPatience.count() << " s";
      return {};
    }
    if (!assignment->has_start()) ADD_FAILURE() << node_name_ << ": expected StartRanks, got " << assignment->ShortDebugString();
    return assignment->start();
  }
  v1::StopJob expect_stop() {
    const auto assignment = inbox_ ? inbox_->pop() : std::nullopt;
    if (!assignment) {
      ADD_FAILURE() << node_name_ << ": no StopJob within " << kPatience.count() << " s";
      return {};
    }
    if (!assignment->has_stop()) ADD_FAILURE() << node_name_ << ": expected StopJob, got " << assignment->ShortDebugString();
    return assignment->stop();
  }
  std::optional<v1::Assignment> next() { return inbox_ ? inbox_->pop() : std::nullopt; }
  std::size_t queued() const { return inbox_ ? inbox_->size() : 0; }
  std::optional<grpc::Status> stream_ended() { return inbox_ ? inbox_->ended() : std::nullopt; }

  grpc::Status report(const std::string& job_id, std::int32_t rank, std::int32_t generation,
                      v1::RankExit::Cause cause, int code = 0, std::int32_t local_rank = 0,
                      const std::function<void(v1::RankExit&)>& more = {}) {
    v1::ReportRankExitRequest request;
    request.set_agent_id(agent_id_);
    request.set_job_id(job_id);
    v1::RankExit& exit = *request.mutable_exit();
    exit.set_rank(rank);
    exit.set_local_rank(local_rank);
    exit.set_generation(generation);
    exit.set_cause(cause);
    if (cause == v1::RankExit::CAUSE_SIGNALED) {
      exit.set_signal(code);
    } else if (cause == v1::RankExit::CAUSE_EXITED || cause == v1::RankExit::CAUSE_SPAWN_FAILED) {
      exit.set_exit_code(code);
    }
    if (more) more(exit);
    v1::ReportRankExitResponse response;
    return stub_->ReportRankExit(client().get(), request, &response);
  }
  grpc::Status exited(const std::string& job_id, std::int32_t rank, std::int32_t generation, int code) {
    return report(job_id, rank, generation, v1::RankExit::CAUSE_EXITED, code);
  }
  grpc::Status stopped(const std::string& job_id, std::int32_t rank, std::int32_t generation) {
    return report(job_id, rank, generation, v1::RankExit::CAUSE_STOPPED);
  }

  grpc::Status push_logs(const std::vector<v1::LogLine>& lines) {
    v1::PushLogsResponse response;
    auto context = client();
    auto writer = stub_->PushLogs(context.get(), &response);
    v1::PushLogsRequest batch;
    batch.set_agent_id(agent_id_);
    for (const auto& line : lines) *batch.add_lines() = line;
    writer->Write(batch);
    writer->WritesDone();
    return writer->Finish();
  }

 private:
  std::shared_ptr<v1::AgentService::Stub> stub_;
  const std::string node_name_;
  const std::string address_;
  const int slots_;
  const int free_port_;
  std::string agent_id_;
  std::shared_ptr<Inbox<v1::Assignment>> inbox_;
  std::shared_ptr<grpc::ClientContext> context_;
  std::thread reader_;
};

// WatchJob read on a thread into an inbox.
class JobWatcher {
 public:
  JobWatcher(std::shared_ptr<v1::JobService::Stub> stub, const std::string& job_id) {
    context_->set_deadline(std::chrono::system_clock::now() + 300s);
    reader_ = std::thread([stub = std::move(stub), context = context_, inbox = inbox_, job_id] {
      v1::WatchJobRequest request;
      request.set_job_id(job_id);
      auto reader = stub->WatchJob(context.get(), request);
      v1::JobEvent event;
      while (reader->Read(&event)) inbox->push(event);
      inbox->close(reader->Finish());
    });
  }
  ~JobWatcher() {
    context_->TryCancel();
    reader_.join();
  }
  std::optional<v1::JobEvent> next() { return inbox_->pop(); }
  // Events until one in `state` (inclusive); fails the test if it never comes.
  std::vector<v1::JobEvent> until(v1::JobState state) {
    std::vector<v1::JobEvent> events;
    while (auto event = next()) {
      events.push_back(*event);
      if (event->job().state() == state) return events;
    }
    ADD_FAILURE() << "no watch event in state " << v1::JobState_Name(state);
    return events;
  }
  std::optional<grpc::Status> ended() { return inbox_->ended(); }

 private:
  std::shared_ptr<grpc::ClientContext> context_ = std::make_shared<grpc::ClientContext>();
  std::shared_ptr<Inbox<v1::JobEvent>> inbox_ = std::make_shared<Inbox<v1::JobEvent>>();
  std::thread reader_;
};

v1::JobSpec spec(std::int32_t nproc_per_node = 1, std::int32_t num_nodes = 1, std::int32_t max_restarts = 0) {
  v1::JobSpec s;
  s.set_name("train");
  s.set_program("/opt/train/train");
  s.add_args("--epochs=1");
  s.set_nproc_per_node(nproc_per_node);
  s.set_num_nodes(num_nodes);
  s.set_max_restarts(max_restarts);
  set_duration(s.mutable_grace_period(), 2s);
  return s;
}

v1::RunningRanks running(const std::string& job_id, std::int32_t generation, std::vector<std::int32_t> ranks) {
  v1::RunningRanks r;
  r.set_job_id(job_id);
  r.set_generation(generation);
  for (const auto rank : ranks) r.add_ranks(rank);
  return r;
}

std::vector<std::int32_t> ranks_of(const v1::StartRanks& start) { return {start.ranks().begin(), start.ranks().end()}; }
std::vector<std::string> nodes_of(const v1::Job& job) { return {job.nodes().begin(), job.nodes().end()}; }

class CoordinatorTest : public ::testing::Test {
 protected:
  void SetUp() override { start(); }
  void TearDown() override { stop(); }

  // Builds a coordinator over the test's SQLite file and serves it on a fresh port.
  void start() {
    CoordinatorOptions options{.store = open_sqlite_job_store(dir_ / "state.db")};
    options.agent_heartbeat_interval = 1s;
    options.agent_heartbeat_timeout = kHeartbeatTimeout;
    options.tick = 10ms;
    options.clock = [clock = clock_] { return clock->now(); };
    if (tweak_) tweak_(options);
    coordinator_ = std::make_unique<Coordinator>(std::move(options));
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&coordinator_->job_service());
    builder.RegisterService(&coordinator_->agent_service());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port, 0);
    auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials());
    jobs_ = std::shared_ptr<v1::JobService::Stub>(v1::JobService::NewStub(channel));
    agents_ = std::shared_ptr<v1::AgentService::Stub>(v1::AgentService::NewStub(channel));
  }

  // Shuts the coordinator down (its streams end with UNAVAILABLE) and destroys it.
  void stop() {
    if (!coordinator_) return;
    coordinator_->shutdown();
    if (server_) server_->Shutdown(std::chrono::system_clock::now() + 10s);
    server_.reset();
    coordinator_.reset();
  }

  // Options for the next start() (call stop() and start() to apply them in a test).
  void restart_with(std::function<void(CoordinatorOptions&)> tweak) {
    stop();
    tweak_ = std::move(tweak);
    start();
  }

  std::unique_ptr<FakeAgent> agent(const std::string& node, const std::string& address, int slots,
                                   int free_port = 0) {
    return std::make_unique<FakeAgent>(agents_, node, address, slots, free_port);
  }

  grpc::Status submit(const v1::JobSpec& s, v1::Job* job, const std::string& request_id = "") {
    v1::SubmitJobRequest request;
    *request.mutable_spec() = s;
    request.set_request_id(request_id);
    v1::SubmitJobResponse response;
    grpc::Status status = jobs_->SubmitJob(client().get(), request, &response);
    if (job) *job = response.job();
    return status;
  }
  // Submits a spec that must be accepted; returns its job id.
  std::string submit_ok(const v1::JobSpec& s, const std::string& request_id = "") {
    v1::Job job;
    const grpc::Status status = submit(s, &job, request_id);
    EXPECT_TRUE(status.ok()) << describe(status);
    return job.job_id();
  }

  grpc::Status get(const std::string& job_id, v1::Job* job) {
    v1::GetJobRequest request;
    request.set_job_id(job_id);
    return jobs_->GetJob(client().get(), request, job);
  }
  v1::Job get_ok(const std::string& job_id) {
    v1::Job job;
    const grpc::Status status = get(job_id, &job);
    EXPECT_TRUE(status.ok()) << describe(status);
    return job;
  }

  // Polls GetJob until `done`, failing the test at the deadline.
  v1::Job await_job(const std::string& job_id, const std::function<bool(const v1::Job&)>& done,
                    const std::string& what) {
    const auto deadline = Clock::now() + kPatience;
    for (;;) {
      v1::Job job;
      const grpc::Status status = get(job_id, &job);
      if (status.ok() && done(job)) return job;
      if (Clock::now() > deadline) {
        ADD_FAILURE() << "timed out waiting for " << what << "; GetJob: " << describe(status) << " "
                      << job.ShortDebugString();
        return job;
      }
      std::this_thread::sleep_for(5ms);
    }
  }
  v1::Job await_state(const std::string& job_id, v1::JobState state) {
    return await_job(job_id, [&](const v1::Job& job) { return job.state() == state; },
                     "state " + v1::JobState_Name(state));
  }

  grpc::Status cancel(const std::string& job_id, v1::Job* job, const std::string& reason = "",
                      std::optional<std::chrono::milliseconds> grace = std::nullopt) {
    v1::CancelJobRequest request;
    request.set_job_id(job_id);
    request.set_reason(reason);
    if (grace) set_duration(request.mutable_grace_period(), *grace);
    v1::Job local;
    return jobs_->CancelJob(client().get(), request, job ? job : &local);
  }

  grpc::Status list(std::vector<v1::JobState> states, int page_size, const std::string& token,
                    v1::ListJobsResponse* response) {
    v1::ListJobsRequest request;
    for (const auto state : states) request.add_states(state);
    request.set_page_size(page_size);
    request.set_page_token(token);
    return jobs_->ListJobs(client().get(), request, response);
  }

  // StreamLogs without follow: the retained lines.
  grpc::Status logs(const v1::StreamLogsRequest& request, std::vector<v1::LogLine>* lines) {
    auto context = client();
    auto reader = jobs_->StreamLogs(context.get(), request);
    v1::LogLine line;
    while (reader->Read(&line)) lines->push_back(line);
    return reader->Finish();
  }

  ScopedTempDir dir_;
  std::shared_ptr<FakeClock> clock_ = std::make_shared<FakeClock>();
  std::function<void(CoordinatorOptions&)> tweak_;
  std::unique_ptr<Coordinator> coordinator_;
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<v1::JobService::Stub> jobs_;
  std::shared_ptr<v1::AgentService::Stub> agents_;
};

// --- SubmitJob -------------------------------------------------------------------------

TEST_F(CoordinatorTest, SubmitJob_BadSpec_IsInvalidArgumentNamingTheField) {
  const std::vector<std::pair<std::function<void(v1::JobSpec&)>, std::string>> cases = {
      {[](v1::JobSpec& s) { s.clear_program(); }, "spec.program"},
      {[](v1::JobSpec& s) { s.set_nproc_per_node(-1); }, "spec.nproc_per_node"},
      {[](v1::JobSpec& s) { s.set_num_nodes(-1); }, "spec.num_nodes"},
      {[](v1::JobSpec& s) {
         s.set_num_nodes(2);
         s.set_min_nodes(3);
       }, "spec.min_nodes"},
      {[](v1::JobSpec& s) { s.set_max_restarts(-2); }, "spec.max_restarts"},
      {[](v1::JobSpec& s) { s.mutable_grace_period()->set_seconds(-1); }, "spec.grace_period"},
  };
  for (const auto& [change, field] : cases) {
    v1::JobSpec bad = spec();
    change(bad);
    const grpc::Status status = submit(bad, nullptr);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << field;
    EXPECT_NE(status.error_message().find(field), std::string::npos) << "'" << status.error_message() << "'";
  }
  v1::ListJobsResponse listed;
  ASSERT_TRUE(list({}, 0, "", &listed).ok());
  EXPECT_EQ(listed.jobs_size(), 0) << "a refused spec created a job";
}

TEST_F(CoordinatorTest, SubmitJob_ReturnsAPendingJob_WithItsDefaultsFilledIn) {
  v1::JobSpec given;
  given.set_program("/opt/bin/my trainer");
  v1::Job job;
  ASSERT_TRUE(submit(given, &job).ok());
  EXPECT_EQ(job.state(), v1::JOB_STATE_PENDING);
  EXPECT_EQ(job.spec().name(), "my trainer");
  EXPECT_EQ(job.job_id().rfind("my-trainer-", 0), 0u) << job.job_id();  // safe in file names
  EXPECT_EQ(job.spec().nproc_per_node(), 1);
  EXPECT_EQ(job.spec().num_nodes(), 1);
  EXPECT_EQ(job.spec().min_nodes(), 1);
  EXPECT_TRUE(job.spec().has_heartbeat_timeout());
  EXPECT_EQ(job.spec().log().tail_lines(), 1000);
  EXPECT_TRUE(job.has_create_time());
  EXPECT_FALSE(job.has_start_time());
  EXPECT_EQ(get_ok(job.job_id()).state(), v1::JOB_STATE_PENDING);

  v1::Job missing;
  EXPECT_EQ(get("no-such-job", &missing).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(CoordinatorTest, SubmitJob_SameRequestId_SameSpec_ReturnsTheSameJob_OtherSpecIsAlreadyExists) {
  v1::Job first, again, other;
  ASSERT_TRUE(submit(spec(), &first, "req-1").ok());
  ASSERT_TRUE(submit(spec(), &again, "req-1").ok());
  EXPECT_EQ(again.job_id(), first.job_id());
  // The spec is compared with its defaults filled in: an explicit default is the same spec.
  v1::JobSpec same = spec();
  same.set_min_nodes(1);
  ASSERT_TRUE(submit(same, &again, "req-1").ok());
  EXPECT_EQ(again.job_id(), first.job_id());

  v1::JobSpec different = spec();
  different.add_args("--more");
  const grpc::Status status = submit(different, &other, "req-1");
  EXPECT_EQ(status.error_code(), grpc::StatusCode::ALREADY_EXISTS) << describe(status);
  EXPECT_NE(status.error_message().find("req-1"), std::string::npos) << status.error_message();

  // No request_id: no deduplication.
  v1::Job a, b;
  ASSERT_TRUE(submit(spec(), &a).ok());
  ASSERT_TRUE(submit(spec(), &b).ok());
  EXPECT_NE(a.job_id(), b.job_id());
  v1::ListJobsResponse listed;
  ASSERT_TRUE(list({}, 0, "", &listed).ok());
  EXPECT_EQ(listed.jobs_size(), 3);
}

// A store that commits the first new job it is given and then says it could not: what a
// coordinator sees when etcd commits a proposal after the client's deadline. The outcome of
// that write is unknown to the coordinator.
class FirstInsertAnsweredTooLate final : public fabric::launcher::JobStore {
 public:
  explicit FirstInsertAnsweredTooLate(std::unique_ptr<JobStore> inner) : inner_(std::move(inner)) {}
  void put_job(fabric::launcher::StoredJob& job) override {
    if (job.revision != 0 || answered_late_) return inner_->put_job(job);
    fabric::launcher::StoredJob committed = job;  // the caller's copy stays as it was: unheard
    inner_->put_job(committed);
    answered_late_ = true;
    throw fabric::launcher::JobStoreUnavailable("etcd did not answer in time");
  }
  void delete_job(const std::string& job_id) override { inner_->delete_job(job_id); }
  std::vector<fabric::launcher::StoredJob> load_jobs() override { return inner_->load_jobs(); }
  void put_session(const fabric::launcher::StoredSession& session) override { inner_->put_session(session); }
  void delete_session(const std::string& agent_id) override { inner_->delete_session(agent_id); }
  std::vector<fabric::launcher::StoredSession> load_sessions() override { return inner_->load_sessions(); }

 private:
  std::unique_ptr<JobStore> inner_;
  bool answered_late_ = false;
};

TEST_F(CoordinatorTest, SubmitJob_WhoseWriteCommittedUnheard_IsStillOneJobWhenRetriedWithItsRequestId) {
  if (const std::string why = fabric::testing::EtcdCluster::unavailable(); !why.empty()) GTEST_SKIP() << why;
  const fabric::testing::EtcdCluster etcd(dir_ / "etcd", 1);
  const auto client = std::make_shared<fabric::launcher::EtcdClient>(std::vector<std::string>{etcd.endpoints()});
  restart_with([&](CoordinatorOptions& options) {
    options.store = std::make_unique<FirstInsertAnsweredTooLate>(fabric::launcher::open_etcd_job_store(client, "/late"));
  });
  v1::Job refused_job, retried;
  const grpc::Status refused = submit(spec(), &refused_job, "req-1");
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::UNAVAILABLE) << describe(refused);
  EXPECT_NE(refused.error_message().find("same request_id"), std::string::npos) << refused.error_message();
  ASSERT_TRUE(submit(spec(), &retried, "req-1").ok());

  // In etcd: the one job, the one the retry returned (the first write, recognised as ours).
  const auto stored = fabric::launcher::open_etcd_job_store(client, "/late")->load_jobs();
  ASSERT_EQ(stored.size(), 1u);
  EXPECT_EQ(stored[0].record.job().job_id(), retried.job_id());
  v1::ListJobsResponse listed;
  ASSERT_TRUE(list({}, 0, "", &listed).ok());
  EXPECT_EQ(listed.jobs_size(), 1);
}

TEST_F(CoordinatorTest, SubmitJob_BeyondTheUnfinishedJobLimit_IsResourceExhausted) {
  restart_with([](CoordinatorOptions& options) { options.max_unfinished_jobs = 2; });
  const std::string first = submit_ok(spec());
  submit_ok(spec());
  EXPECT_EQ(submit(spec(), nullptr).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  ASSERT_TRUE(cancel(first, nullptr).ok());
  EXPECT_TRUE(submit(spec(), nullptr).ok());
}

// --- Placement and the rank environment -----------------------------------------------

TEST_F(CoordinatorTest, Job_StaysPendingWaitingForSlots_UntilAnAgentWithEnoughRegisters_ThenStartsThere) {
  v1::JobSpec s = spec(/*nproc_per_node=*/2);
  (*s.mutable_env())["USER_SETTING"] = "kept";
  (*s.mutable_env())["WORLD_SIZE"] = "999";  // stale: the launcher's value wins
  const std::string id = submit_ok(s);
  await_job(id, [](const v1::Job& j) { return j.message().find("0 of the 0 connected") != std::string::npos; },
            "the waiting message of an empty cluster");

  auto small = agent("node-small", "10.0.0.1:7000", 1, 29500);
  small->join();
  v1::Job job = await_job(
      id, [](const v1::Job& j) { return j.message().find("0 of the 1 connected") != std::string::npos; },
      "the waiting message with one node too small");
  EXPECT_EQ(job.state(), v1::JOB_STATE_PENDING);
  EXPECT_EQ(job.message(), "waiting for 1 node with 2 free slots; 0 of the 1 connected have them");

  auto big = agent("node-big", "10.0.0.2:7000", 4, 29511);
  big->join();
  const v1::StartRanks start = big->expect_start();
  EXPECT_EQ(start.job_id(), id);
  EXPECT_EQ(start.generation(), 0);
  EXPECT_EQ(ranks_of(start), (std::vector<std::int32_t>{0, 1}));
  EXPECT_EQ(start.node_rank(), 0);
  EXPECT_EQ(start.world_size(), 2);
  EXPECT_EQ(start.spec().program(), "/opt/train/train");
  const auto& env = start.env();
  EXPECT_EQ(env.at("MASTER_ADDR"), "10.0.0.2");
  EXPECT_EQ(env.at("MASTER_PORT"), "29511");
  EXPECT_EQ(env.at("FABRICD_STORE_ENDPOINT"), "10.0.0.2:7000");
  EXPECT_EQ(env.at("WORLD_SIZE"), "2");
  EXPECT_EQ(env.at("LOCAL_WORLD_SIZE"), "2");
  EXPECT_EQ(env.at("GROUP_RANK"), "0");
  EXPECT_EQ(env.at("FABRICD_JOB_ID"), id);
  EXPECT_EQ(env.at("FABRICD_RESTART_COUNT"), "0");
  EXPECT_EQ(env.at("USER_SETTING"), "kept");
  EXPECT_FALSE(env.contains("RANK"));  // per process: the agent's to add

  job = await_state(id, v1::JOB_STATE_RUNNING);
  EXPECT_EQ(nodes_of(job), std::vector<std::string>{"node-big"});
  EXPECT_TRUE(job.has_start_time());
  EXPECT_EQ(job.message(), "running generation 0 on 1 node (2 ranks)");
  EXPECT_EQ(small->queued(), 0u) << "the node without room got an assignment";
}

TEST_F(CoordinatorTest, TwoNodeJob_IsPlacedByNodeName_AndEveryNodeAgreesOnNodeZero) {
  auto b = agent("node-b", "10.0.0.12:7000", 2, 29502);
  auto a = agent("node-a", "10.0.0.11:7000", 2, 29501);
  b->join();  // registered first, but sorts second
  a->join();
  // A fresher free port from node-a's heartbeat is the one MASTER_PORT gets.
  ASSERT_TRUE(a->heartbeat({}, 29777).ok());
  const std::string id = submit_ok(spec(/*nproc_per_node=*/2, /*num_nodes=*/2));
  const v1::StartRanks on_a = a->expect_start();
  const v1::StartRanks on_b = b->expect_start();
  EXPECT_EQ(on_a.node_rank(), 0);
  EXPECT_EQ(on_b.node_rank(), 1);
  EXPECT_EQ(ranks_of(on_a), (std::vector<std::int32_t>{0, 1}));
  EXPECT_EQ(ranks_of(on_b), (std::vector<std::int32_t>{2, 3}));
  for (const v1::StartRanks* start : {&on_a, &on_b}) {
    EXPECT_EQ(start->job_id(), id);
    EXPECT_EQ(start->world_size(), 4);
    EXPECT_EQ(start->env().at("WORLD_SIZE"), "4");
    EXPECT_EQ(start->env().at("GROUP_WORLD_SIZE"), "2");
    EXPECT_EQ(start->env().at("MASTER_ADDR"), "10.0.0.11");
    EXPECT_EQ(start->env().at("MASTER_PORT"), "29777");
    EXPECT_EQ(start->env().at("FABRICD_STORE_ENDPOINT"), "10.0.0.11:7000");
  }
  EXPECT_EQ(on_a.env().at("GROUP_RANK"), "0");
  EXPECT_EQ(on_b.env().at("GROUP_RANK"), "1");
  const v1::Job job = await_state(id, v1::JOB_STATE_RUNNING);
  EXPECT_EQ(nodes_of(job), (std::vector<std::string>{"node-a", "node-b"}));
}

// --- Exits, restarts, failures --------------------------------------------------------

TEST_F(CoordinatorTest, AllRanksExitZero_SucceedsAndStopsTheJobOnEveryNode) {
  auto a = agent("node-a", "10.0.0.11:7000", 1);
  auto b = agent("node-b", "10.0.0.12:7000", 1);
  a->join();
  b->join();
  const std::string id = submit_ok(spec(1, 2));
  a->expect_start();
  b->expect_start();
  await_state(id, v1::JOB_STATE_RUNNING);
  ASSERT_TRUE(a->exited(id, 0, 0, 0).ok());
  EXPECT_EQ(get_ok(id).state(), v1::JOB_STATE_RUNNING) << "succeeded before every rank exited";
  ASSERT_TRUE(b->exited(id, 1, 0, 0).ok());
  const v1::Job job = get_ok(id);  // the report is acted on before it is answered
  EXPECT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_TRUE(job.has_end_time());
  EXPECT_EQ(job.message(), "every rank of generation 0 exited 0");
  for (FakeAgent* node : {a.get(), b.get()}) {
    const v1::StopJob stop = node->expect_stop();
    EXPECT_EQ(stop.job_id(), id) << node->node_name();
    EXPECT_EQ(stop.generation(), 0);
    EXPECT_EQ(stop.reason(), v1::StopJob::REASON_UNSPECIFIED);
  }
}

TEST_F(CoordinatorTest, FailedRank_WithARestartLeft_StopsEveryNodeAndStartsTheNextGeneration) {
  auto a = agent("node-a", "10.0.0.11:7000", 1);
  auto b = agent("node-b", "10.0.0.12:7000", 1);
  a->join();
  b->join();
  const std::string id = submit_ok(spec(1, 2, /*max_restarts=*/1));
  a->expect_start();
  b->expect_start();
  await_state(id, v1::JOB_STATE_RUNNING);

  ASSERT_TRUE(b->report(id, 1, 0, v1::RankExit::CAUSE_EXITED, 3, 0, [](v1::RankExit& exit) {
                 exit.mutable_reported_error()->set_message("CUDA out of memory");
                 exit.mutable_reported_error()->set_error_type("torch.OutOfMemoryError");
                 exit.add_stderr_tail("Traceback (most recent call last):");
               }).ok());
  v1::Job job = get_ok(id);
  EXPECT_EQ(job.state(), v1::JOB_STATE_RESTARTING);
  EXPECT_EQ(job.restart_count(), 1);
  EXPECT_EQ(job.failure().generation(), 0);
  EXPECT_EQ(job.failure().node(), "node-b");
  EXPECT_EQ(job.failure().node_rank(), 1);
  EXPECT_EQ(job.failure().first_failure().rank(), 1);
  EXPECT_EQ(job.failure().first_failure().exit_code(), 3);
  EXPECT_EQ(job.failure().first_failure().stderr_tail_size(), 1);
  EXPECT_EQ(job.failure().message(), "rank 1 on node-b exited with code 3: torch.OutOfMemoryError: CUDA out of memory");
  EXPECT_NE(job.message().find("restarting after rank 1"), std::string::npos) << job.message();
  for (FakeAgent* node : {a.get(), b.get()}) {
    const v1::StopJob stop = node->expect_stop();
    EXPECT_EQ(stop.job_id(), id);
    EXPECT_EQ(stop.generation(), 0) << "the stop must be for the failed generation";
    EXPECT_EQ(stop.reason(), v1::StopJob::REASON_RESTART);
    EXPECT_EQ(to_milliseconds(stop.grace_period()), 2s);
  }
  // The idempotent retry of the same report changes nothing.
  ASSERT_TRUE(b->exited(id, 1, 0, 3).ok());
  EXPECT_EQ(get_ok(id).restart_count(), 1);

  // Nothing starts while a rank of generation 0 may still hold its GPU.
  EXPECT_EQ(get_ok(id).state(), v1::JOB_STATE_RESTARTING);
  ASSERT_TRUE(a->stopped(id, 0, 0).ok());
  const v1::StartRanks on_a = a->expect_start();
  const v1::StartRanks on_b = b->expect_start();
  for (const v1::StartRanks* start : {&on_a, &on_b}) {
    EXPECT_EQ(start->generation(), 1);
    EXPECT_EQ(start->world_size(), 2);
    EXPECT_EQ(start->env().at("FABRICD_RESTART_COUNT"), "1");
    EXPECT_EQ(start->env().at("TORCHELASTIC_RESTART_COUNT"), "1");
    EXPECT_EQ(start->env().at("FABRICD_MAX_RESTARTS"), "1");
  }
  EXPECT_EQ(ranks_of(on_a), std::vector<std::int32_t>{0});
  EXPECT_EQ(ranks_of(on_b), std::vector<std::int32_t>{1});
  job = await_state(id, v1::JOB_STATE_RUNNING);
  EXPECT_EQ(job.restart_count(), 1);
  EXPECT_EQ(job.failure().first_failure().rank(), 1) << "the reason for the restart is kept";

  // A late report of generation 0 is answered OK and changes nothing.
  ASSERT_TRUE(a->exited(id, 0, 0, 1).ok());
  EXPECT_EQ(get_ok(id).state(), v1::JOB_STATE_RUNNING);
  // Generation 1 succeeds.
  ASSERT_TRUE(a->exited(id, 0, 1, 0).ok());
  ASSERT_TRUE(b->exited(id, 1, 1, 0).ok());
  EXPECT_EQ(get_ok(id).state(), v1::JOB_STATE_SUCCEEDED);
}

TEST_F(CoordinatorTest, FailedRank_WithNoRestartsLeft_FailsTheJobNamingTheRank) {
  auto a = agent("node-a", "10.0.0.11:7000", 2);
  a->join();
  const std::string id = submit_ok(spec(2, 1, /*max_restarts=*/0));
  a->expect_start();
  await_state(id, v1::JOB_STATE_RUNNING);
  ASSERT_TRUE(a->report(id, 1, 0, v1::RankExit::CAUSE_SIGNALED, 11, 1).ok());
  v1::Job job = get_ok(id);
  EXPECT_EQ(job.state(), v1::JOB_STATE_FAILED);
  EXPECT_EQ(job.restart_count(), 0);
  EXPECT_TRUE(job.has_end_time());
  EXPECT_EQ(job.failure().first_failure().rank(), 1);
  EXPECT_EQ(job.failure().first_failure().signal(), 11);
  EXPECT_EQ(job.failure().message(), "rank 1 on node-a was killed by signal 11");
  EXPECT_EQ(job.message(), job.failure().message());
  const v1::StopJob stop = a->expect_stop();
  EXPECT_EQ(stop.reason(), v1::StopJob::REASON_FAILED);
  EXPECT_EQ(stop.generation(), 0);
  // The other rank's stop report does not move a terminal job.
  ASSERT_TRUE(a->stopped(id, 0, 0).ok());
  EXPECT_EQ(get_ok(id).state(), v1::JOB_STATE_FAILED);
}

TEST_F(CoordinatorTest, ReportRankExit_ForAnUnknownJob_IsNotFound) {
  auto a = agent("node-a", "10.0.0.11:7000", 1);
  a->join();
  EXPECT_EQ(a->exited("no-such-job", 0, 0, 0).error_code(), grpc::StatusCode::NOT_FOUND);
}

// --- WatchJob ------------------------------------------------------------------------

TEST_F(CoordinatorTest, WatchJob_DeliversEveryStateChangeAsItsOwnEvent_EvenToASlowWatcher) {
  const std::string id = submit_ok(spec());
  v1::WatchJobRequest request;
  request.set_job_id(id);
  auto context = client();
  auto reader = jobs_->WatchJob(context.get(), request);
  v1::JobEvent snapshot;
  ASSERT_TRUE(reader->Read(&snapshot));
  EXPECT_EQ(snapshot.job().state(), v1::JOB_STATE_PENDING);
  EXPECT_EQ(snapshot.previous_state(), v1::JOB_STATE_UNSPECIFIED);

  // The job runs and succeeds while the watcher reads nothing.
  auto a = agent("node-a", "10.0.0.11:7000", 1);
  a->join();
  a->expect_start();
  ASSERT_TRUE(a->exited(id, 0, 0, 0).ok());
  ASSERT_EQ(get_ok(id).state(), v1::JOB_STATE_SUCCEEDED);

  std::vector<v1::JobState> states;  // after each state change
  v1::JobState last = snapshot.job().state();
  v1::JobEvent event;
  while (reader->Read(&event)) {
    EXPECT_EQ(event.previous_state(), last) << "an event was skipped or merged: " << event.ShortDebugString();
    if (event.job().state() != event.previous_state()) states.push_back(event.job().state());
    last = event.job().state();
  }
  const grpc::Status status = reader->Finish();
  EXPECT_TRUE(status.ok()) << describe(status);
  EXPECT_EQ(states, (std::vector<v1::JobState>{v1::JOB_STATE_RUNNING, v1::JOB_STATE_SUCCEEDED}));
}

TEST_F(CoordinatorTest, WatchJob_OfAFinishedJob_IsItsSnapshotThenOk_AndOfAnUnknownJobNotFound) {
  const std::string id = submit_ok(spec());
  ASSERT_TRUE(cancel(id, nullptr).ok());
  {
    JobWatcher watcher(jobs_, id);
    const auto snapshot = watcher.next();
    ASSERT_TRUE(snapshot.has_value());
    EXPECT_EQ(snapshot->job().state(), v1::JOB_STATE_CANCELLED);
    const auto status = watcher.ended();
    ASSERT_TRUE(status.has_value()) << "the stream of a finished job stayed open";
    EXPECT_TRUE(status->ok()) << describe(*status);
  }
  JobWatcher unknown(jobs_, "no-such-job");
  const auto status = unknown.ended();
  ASSERT_TRUE(status.has_value());
  EXPECT_EQ(status->error_code(), grpc::StatusCode::NOT_FOUND);
}

// --- Lost agents ---------------------------------------------------------------------

TEST_F(CoordinatorTest, SilentAgent_IsLostAfterTheHeartbeatTimeout_AndAnElasticJobRestartsOnTheSurvivor) {
  auto a = agent("node-a", "10.0.0.11:7000", 1, 29601);
  auto b = agent("node-b", "10.0.0.12:7000", 1, 29602);
  a->join();
  b->join();
  v1::JobSpec elastic = spec(1, 2, /*max_restarts=*/1);
  elastic.set_min_nodes(1);
  const std::string id = submit_ok(elastic);
  EXPECT_EQ(a->expect_start().world_size(), 2);
  EXPECT_EQ(b->expect_start().world_size(), 2);
  JobWatcher watcher(jobs_, id);
  watcher.until(v1::JOB_STATE_RUNNING);

  // node-b keeps heartbeating; node-a falls silent past the timeout.
  clock_->advance(3s);
  ASSERT_TRUE(b->heartbeat({running(id, 0, {1})}).ok());
  clock_->advance(3s);

  const auto restarting = watcher.until(v1::JOB_STATE_RESTARTING);
  ASSERT_FALSE(restarting.empty());
  const v1::Job& lost = restarting.back().job();
  EXPECT_EQ(lost.restart_count(), 1);
  EXPECT_EQ(lost.failure().first_failure().cause(), v1::RankExit::CAUSE_NODE_LOST);
  EXPECT_EQ(lost.failure().first_failure().rank(), 0);
  EXPECT_EQ(lost.failure().node(), "node-a");
  EXPECT_EQ(lost.failure().message(), "rank 0 on node-a was lost with its node");
  EXPECT_EQ(a->heartbeat().error_code(), grpc::StatusCode::NOT_FOUND) << "the lost session is still valid";
  const auto a_stream = a->stream_ended();
  ASSERT_TRUE(a_stream.has_value()) << "the lost agent's stream stayed open";
  EXPECT_EQ(a_stream->error_code(), grpc::StatusCode::NOT_FOUND);

  const v1::StopJob stop = b->expect_stop();
  EXPECT_EQ(stop.reason(), v1::StopJob::REASON_RESTART);
  ASSERT_TRUE(b->stopped(id, 1, 0).ok());
  const v1::StartRanks start = b->expect_start();
  EXPECT_EQ(start.generation(), 1);
  EXPECT_EQ(start.world_size(), 1);  // halved: one node of the two is left
  EXPECT_EQ(start.node_rank(), 0);
  EXPECT_EQ(ranks_of(start), std::vector<std::int32_t>{0});
  EXPECT_EQ(start.env().at("WORLD_SIZE"), "1");
  EXPECT_EQ(start.env().at("MASTER_ADDR"), "10.0.0.12");
  EXPECT_EQ(start.env().at("MASTER_PORT"), "29602");
  const auto back = watcher.until(v1::JOB_STATE_RUNNING);
  ASSERT_FALSE(back.empty());
  EXPECT_EQ(nodes_of(back.back().job()), std::vector<std::string>{"node-b"});
  EXPECT_EQ(back.back().job().restart_count(), 1);
}

TEST_F(CoordinatorTest, LostNode_OfAFixedSizeJob_WaitsPendingForAReplacement) {
  auto a = agent("node-a", "10.0.0.11:7000", 1);
  auto b = agent("node-b", "10.0.0.12:7000", 1);
  a->join();
  b->join();
  const std::string id = submit_ok(spec(1, 2, /*max_restarts=*/1));
  a->expect_start();
  b->expect_start();
  await_state(id, v1::JOB_STATE_RUNNING);
  clock_->advance(3s);
  ASSERT_TRUE(b->heartbeat().ok());
  clock_->advance(3s);
  EXPECT_EQ(b->expect_stop().reason(), v1::StopJob::REASON_RESTART);
  ASSERT_TRUE(b->stopped(id, 1, 0).ok());
  v1::Job job = await_state(id, v1::JOB_STATE_PENDING);
  EXPECT_EQ(job.restart_count(), 1);
  EXPECT_EQ(job.message(), "waiting for 2 nodes with 1 free slots; 1 of the 1 connected have them");

  auto c = agent("node-c", "10.0.0.13:7000", 1);
  c->join();
  const v1::StartRanks on_b = b->expect_start();
  const v1::StartRanks on_c = c->expect_start();
  EXPECT_EQ(on_b.generation(), 1);
  EXPECT_EQ(on_b.node_rank(), 0);
  EXPECT_EQ(on_c.node_rank(), 1);
  EXPECT_EQ(on_c.world_size(), 2);
  job = await_state(id, v1::JOB_STATE_RUNNING);
  EXPECT_EQ(nodes_of(job), (std::vector<std::string>{"node-b", "node-c"}));
}

TEST_F(CoordinatorTest, NodeThatRegistersAgain_EndsItsOldSession_AndItsRanksAreLost) {
  auto first = agent("node-a", "10.0.0.11:7000", 1);
  first->join();
  const std::string id = submit_ok(spec());
  first->expect_start();
  await_state(id, v1::JOB_STATE_RUNNING);
  auto restarted = agent("node-a", "10.0.0.11:7000", 1);
  restarted->join();
  const v1::Job job = await_state(id, v1::JOB_STATE_FAILED);
  EXPECT_EQ(job.failure().first_failure().cause(), v1::RankExit::CAUSE_NODE_LOST);
  EXPECT_EQ(first->heartbeat().error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_TRUE(restarted->heartbeat().ok());
  EXPECT_NE(first->id(), restarted->id());
}

// --- CancelJob -----------------------------------------------------------------------

TEST_F(CoordinatorTest, CancelJob_ReturnsItCancelled_StopsItsNodes_AndIsIdempotent) {
  auto a = agent("node-a", "10.0.0.11:7000", 1);
  a->join();
  const std::string id = submit_ok(spec());
  a->expect_start();
  await_state(id, v1::JOB_STATE_RUNNING);
  const std::string waiting = submit_ok(spec());  // no free slot: PENDING

  v1::Job job;
  ASSERT_TRUE(cancel(id, &job, "by test", 7s).ok());
  EXPECT_EQ(job.state(), v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(job.message(), "cancelled: by test");
  EXPECT_TRUE(job.has_end_time());
  const v1::StopJob stop = a->expect_stop();
  EXPECT_EQ(stop.job_id(), id);
  EXPECT_EQ(stop.reason(), v1::StopJob::REASON_CANCELLED);
  EXPECT_EQ(to_milliseconds(stop.grace_period()), 7s);

  v1::Job again;
  ASSERT_TRUE(cancel(id, &again, "another reason").ok());
  EXPECT_EQ(again.state(), v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(again.message(), "cancelled: by test") << "a second cancel rewrote the first";

  // The slot is free once the cancelled rank is gone: the waiting job starts there.
  ASSERT_TRUE(a->stopped(id, 0, 0).ok());
  EXPECT_EQ(a->expect_start().job_id(), waiting);
  await_state(waiting, v1::JOB_STATE_RUNNING);

  EXPECT_EQ(cancel("no-such-job", nullptr).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(CoordinatorTest, CancelJob_OfAPendingJob_CancelsIt_WithTheSpecsGraceByDefault) {
  const std::string id = submit_ok(spec());
  v1::Job job;
  ASSERT_TRUE(cancel(id, &job).ok());
  EXPECT_EQ(job.state(), v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(job.message(), "cancelled");
}

TEST_F(CoordinatorTest, CancelJob_OfASucceededOrFailedJob_IsFailedPrecondition) {
  auto a = agent("node-a", "10.0.0.11:7000", 1);
  a->join();
  const std::string succeeded = submit_ok(spec());
  a->expect_start();
  ASSERT_TRUE(a->exited(succeeded, 0, 0, 0).ok());
  ASSERT_EQ(get_ok(succeeded).state(), v1::JOB_STATE_SUCCEEDED);
  a->expect_stop();
  grpc::Status status = cancel(succeeded, nullptr);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << describe(status);
  EXPECT_NE(status.error_message().find("SUCCEEDED"), std::string::npos) << status.error_message();
  EXPECT_EQ(get_ok(succeeded).state(), v1::JOB_STATE_SUCCEEDED);

  const std::string failed = submit_ok(spec());
  a->expect_start();
  ASSERT_TRUE(a->exited(failed, 0, 0, 1).ok());
  ASSERT_EQ(get_ok(failed).state(), v1::JOB_STATE_FAILED);
  status = cancel(failed, nullptr);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << describe(status);
}

// --- ListJobs ------------------------------------------------------------------------

TEST_F(CoordinatorTest, ListJobs_NewestFirst_InPages_WithTokensBoundToTheirFilter) {
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) {
    v1::JobSpec s = spec();
    s.set_name("job" + std::to_string(i));
    ids.push_back(submit_ok(s));
  }
  ASSERT_TRUE(cancel(ids[1], nullptr).ok());
  ASSERT_TRUE(cancel(ids[3], nullptr).ok());
  const auto names = [](const v1::ListJobsResponse& page) {
    std::vector<std::string> out;
    for (const auto& job : page.jobs()) out.push_back(job.spec().name());
    return out;
  };

  v1::ListJobsResponse page;
  ASSERT_TRUE(list({}, 2, "", &page).ok());
  EXPECT_EQ(names(page), (std::vector<std::string>{"job4", "job3"}));
  ASSERT_FALSE(page.next_page_token().empty());
  const std::string token = page.next_page_token();
  page.Clear();
  ASSERT_TRUE(list({}, 2, token, &page).ok());
  EXPECT_EQ(names(page), (std::vector<std::string>{"job2", "job1"}));
  const std::string last_token = page.next_page_token();
  page.Clear();
  ASSERT_TRUE(list({}, 2, last_token, &page).ok());
  EXPECT_EQ(names(page), std::vector<std::string>{"job0"});
  EXPECT_TRUE(page.next_page_token().empty());

  page.Clear();
  ASSERT_TRUE(list({}, 0, "", &page).ok());  // 0: the default page size
  EXPECT_EQ(page.jobs_size(), 5);
  EXPECT_TRUE(page.next_page_token().empty());

  page.Clear();
  ASSERT_TRUE(list({v1::JOB_STATE_CANCELLED}, 1, "", &page).ok());
  EXPECT_EQ(names(page), std::vector<std::string>{"job3"});
  const std::string cancelled_token = page.next_page_token();
  ASSERT_FALSE(cancelled_token.empty());
  page.Clear();
  ASSERT_TRUE(list({v1::JOB_STATE_CANCELLED}, 1, cancelled_token, &page).ok());
  EXPECT_EQ(names(page), std::vector<std::string>{"job1"});

  // A token only works with the filter it was made for.
  page.Clear();
  EXPECT_EQ(list({}, 1, cancelled_token, &page).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(list({v1::JOB_STATE_PENDING}, 1, cancelled_token, &page).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(list({v1::JOB_STATE_CANCELLED}, 1, token, &page).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(list({}, 1, "garbage", &page).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(list({}, 1, "|not-a-number", &page).error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  // The filter's order does not matter.
  page.Clear();
  ASSERT_TRUE(list({v1::JOB_STATE_PENDING, v1::JOB_STATE_CANCELLED}, 2, "", &page).ok());
  const std::string both = page.next_page_token();
  page.Clear();
  ASSERT_TRUE(list({v1::JOB_STATE_CANCELLED, v1::JOB_STATE_PENDING}, 2, both, &page).ok());
  EXPECT_EQ(names(page), (std::vector<std::string>{"job2", "job1"}));
}

TEST_F(CoordinatorTest, FinishedJobsBeyondTheHistoryLimit_AreForgotten_OldestFirst) {
  restart_with([](CoordinatorOptions& options) { options.finished_jobs_kept = 1; });
  const std::string old_job = submit_ok(spec(), "req-old");
  ASSERT_TRUE(cancel(old_job, nullptr).ok());
  const std::string new_job = submit_ok(spec());
  ASSERT_TRUE(cancel(new_job, nullptr).ok());
  const auto deadline = Clock::now() + kPatience;
  v1::Job job;
  while (get(old_job, &job).ok()) {
    ASSERT_LT(Clock::now(), deadline) << "the oldest finished job was never forgotten";
    std::this_thread::sleep_for(5ms);
  }
  EXPECT_EQ(get_ok(new_job).state(), v1::JOB_STATE_CANCELLED);
  // Its request_id is forgotten with it.
  EXPECT_NE(submit_ok(spec(), "req-old"), old_job);
}

// --- Logs ----------------------------------------------------------------------------

v1::LogLine log_line(const std::string& job_id, std::int32_t rank, v1::LogStream stream, const std::string& text) {
  v1::LogLine line;
  line.set_job_id(job_id);
  line.set_rank(rank);
  line.set_stream(stream);
  line.set_node("node-a");
  line.set_text(text);
  return line;
}

std::vector<std::string> texts(const std::vector<v1::LogLine>& lines) {
  std::vector<std::string> out;
  for (const auto& line : lines) out.push_back(line.text());
  return out;
}

TEST_F(CoordinatorTest, StreamLogs_ReplaysTheLinesAgentsPushed_Filtered) {
  auto a = agent("node-a", "10.0.0.11:7000", 2);
  a->join();
  const std::string id = submit_ok(spec(2));
  a->expect_start();
  ASSERT_TRUE(a->push_logs({log_line(id, 0, v1::LOG_STREAM_STDOUT, "zero out"),
                            log_line(id, 1, v1::LOG_STREAM_STDOUT, "one out"),
                            log_line(id, 0, v1::LOG_STREAM_STDERR, "zero err"),
                            log_line("forgotten-job", 0, v1::LOG_STREAM_STDOUT, "dropped"),
                            log_line(id, 0, v1::LOG_STREAM_STDOUT, "zero out 2")})
                  .ok());
  v1::StreamLogsRequest request;
  request.set_job_id(id);
  request.set_tail_lines(-1);
  std::vector<v1::LogLine> lines;
  ASSERT_TRUE(logs(request, &lines).ok());
  EXPECT_EQ(texts(lines), (std::vector<std::string>{"zero out", "one out", "zero err", "zero out 2"}));
  ASSERT_FALSE(lines.empty());
  EXPECT_EQ(lines[0].node(), "node-a");

  request.add_ranks(0);
  request.set_stream(v1::LOG_STREAM_STDOUT);
  lines.clear();
  ASSERT_TRUE(logs(request, &lines).ok());
  EXPECT_EQ(texts(lines), (std::vector<std::string>{"zero out", "zero out 2"}));

  request.set_tail_lines(1);
  lines.clear();
  ASSERT_TRUE(logs(request, &lines).ok());
  EXPECT_EQ(texts(lines), std::vector<std::string>{"zero out 2"});

  request.set_tail_lines(0);
  lines.clear();
  ASSERT_TRUE(logs(request, &lines).ok());
  EXPECT_TRUE(lines.empty());

  v1::StreamLogsRequest unknown;
  unknown.set_job_id("no-such-job");
  lines.clear();
  EXPECT_EQ(logs(unknown, &lines).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(CoordinatorTest, StreamLogs_Follow_SendsNewLines_AndClosesWithOkWhenTheJobEnds) {
  auto a = agent("node-a", "10.0.0.11:7000", 1);
  a->join();
  const std::string id = submit_ok(spec());
  a->expect_start();
  ASSERT_TRUE(a->push_logs({log_line(id, 0, v1::LOG_STREAM_STDOUT, "before")}).ok());

  auto inbox = std::make_shared<Inbox<v1::LogLine>>();
  auto context = std::make_shared<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + 300s);
  std::thread follower([stub = jobs_, context, inbox, id] {
    v1::StreamLogsRequest request;
    request.set_job_id(id);
    request.set_tail_lines(-1);
    request.set_follow(true);
    auto reader = stub->StreamLogs(context.get(), request);
    v1::LogLine line;
    while (reader->Read(&line)) inbox->push(line);
    inbox->close(reader->Finish());
  });
  const auto first = inbox->pop();
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->text(), "before");
  ASSERT_TRUE(a->push_logs({log_line(id, 0, v1::LOG_STREAM_STDERR, "live")}).ok());
  const auto live = inbox->pop();
  EXPECT_TRUE(live.has_value() && live->text() == "live");

  ASSERT_TRUE(a->exited(id, 0, 0, 0).ok());
  const auto status = inbox->ended();
  if (!status) context->TryCancel();
  follower.join();
  ASSERT_TRUE(status.has_value()) << "the follow stream stayed open after the job ended";
  EXPECT_TRUE(status->ok()) << describe(*status);
}

TEST_F(CoordinatorTest, PushLogs_FromAnUnknownAgent_IsNotFound) {
  FakeAgent stranger(agents_, "node-x", "10.0.0.99:7000", 1);
  stranger.set_id("agent-never-registered");
  EXPECT_EQ(stranger.push_logs({log_line("job", 0, v1::LOG_STREAM_STDOUT, "x")}).error_code(),
            grpc::StatusCode::NOT_FOUND);
}

// --- A coordinator restart -----------------------------------------------------------

TEST_F(CoordinatorTest, CoordinatorRebuiltOverTheSameFile_KeepsTheRunningJobAndTheAgentsSession) {
  auto a = agent("node-a", "10.0.0.11:7000", 1, 29650);
  a->join();
  const std::string id = submit_ok(spec(1, 1, /*max_restarts=*/2), "req-restart");
  a->expect_start();
  ASSERT_TRUE(a->exited(id, 0, 0, 1).ok());  // generation 0 fails: restart into generation 1
  a->expect_stop();
  const v1::StartRanks generation_1 = a->expect_start();
  ASSERT_EQ(generation_1.generation(), 1);
  const v1::Job before = await_state(id, v1::JOB_STATE_RUNNING);
  ASSERT_EQ(before.restart_count(), 1);

  stop();
  const auto ended = a->stream_ended();
  ASSERT_TRUE(ended.has_value());
  EXPECT_EQ(ended->error_code(), grpc::StatusCode::UNAVAILABLE) << describe(*ended);
  start();
  a->use(agents_);

  const v1::Job after = get_ok(id);
  EXPECT_EQ(after.state(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(after.restart_count(), 1);
  EXPECT_EQ(nodes_of(after), std::vector<std::string>{"node-a"});
  EXPECT_EQ(after.failure().first_failure().exit_code(), 1);
  const grpc::Status heartbeat = a->heartbeat({running(id, 1, {0})});
  EXPECT_TRUE(heartbeat.ok()) << "the session did not survive the restart: " << describe(heartbeat);
  a->open_stream();
  const v1::StartRanks again = a->expect_start();
  EXPECT_TRUE(MessageDifferencer::Equals(again, generation_1))
      << "re-sent:\n" << again.DebugString() << "first sent:\n" << generation_1.DebugString();

  // The retried submission still finds its job, and the job still completes.
  v1::Job resubmitted;
  ASSERT_TRUE(submit(spec(1, 1, 2), &resubmitted, "req-restart").ok());
  EXPECT_EQ(resubmitted.job_id(), id);
  ASSERT_TRUE(a->exited(id, 0, 1, 0).ok());
  EXPECT_EQ(get_ok(id).state(), v1::JOB_STATE_SUCCEEDED);
}

TEST_F(CoordinatorTest, CoordinatorRebuilt_PlacesNothingOnASessionUntilItsHeartbeatSaysWhichPortIsFree) {
  auto a = agent("node-a", "10.0.0.11:7000", 1, 29650);
  a->join();
  stop();
  ASSERT_TRUE(a->stream_ended().has_value());
  start();
  a->use(agents_);
  a->open_stream();
  // The port the agent registered with may be taken by now: a job submitted before the
  // agent speaks again waits, and gets the port its heartbeat reports.
  const std::string id = submit_ok(spec());
  const v1::Job waiting = await_job(
      id, [](const v1::Job& job) { return job.message().rfind("waiting for", 0) == 0; }, "a placement attempt");
  EXPECT_EQ(waiting.state(), v1::JOB_STATE_PENDING) << "placed before the agent spoke";
  EXPECT_EQ(a->queued(), 0u) << "an assignment came before the agent spoke";
  ASSERT_TRUE(a->heartbeat({}, 29651).ok());
  const v1::StartRanks start = a->expect_start();
  EXPECT_EQ(start.job_id(), id);
  EXPECT_EQ(start.env().at("MASTER_PORT"), "29651");
}

// --- AgentService input and sessions ------------------------------------------------

TEST_F(CoordinatorTest, Register_BadInput_IsInvalidArgument) {
  const struct {
    std::string node, address;
    int slots;
    std::string named;
  } cases[] = {
      {"", "10.0.0.1:7000", 1, "node_name"},     {"n", "10.0.0.1:7000", 0, "slots"},
      {"n", "10.0.0.1:7000", -4, "slots"},       {"n", "no-port", 1, "address"},
      {"n", ":7000", 1, "address"},              {"n", "10.0.0.1:", 1, "address"},
  };
  for (const auto& c : cases) {
    FakeAgent bad(agents_, c.node, c.address, c.slots);
    const grpc::Status status = bad.register_agent();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << "'" << c.node << "' '" << c.address << "' " << c.slots;
    EXPECT_NE(status.error_message().find(c.named), std::string::npos) << status.error_message();
  }
  FakeAgent good(agents_, "n", "10.0.0.1:7000", 1);
  v1::RegisterResponse response;
  ASSERT_TRUE(good.register_agent(&response).ok());
  EXPECT_FALSE(response.agent_id().empty());
  EXPECT_EQ(to_milliseconds(response.heartbeat_interval()), 1s);
  EXPECT_EQ(to_milliseconds(response.heartbeat_timeout()), kHeartbeatTimeout);
}

TEST_F(CoordinatorTest, UnknownAgentId_IsNotFound_OnEveryAgentCall) {
  FakeAgent stranger(agents_, "node-x", "10.0.0.99:7000", 1);
  stranger.set_id("agent-never-registered");
  EXPECT_EQ(stranger.heartbeat().error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(stranger.exited("job", 0, 0, 0).error_code(), grpc::StatusCode::NOT_FOUND);
  stranger.open_stream();
  const auto ended = stranger.stream_ended();
  ASSERT_TRUE(ended.has_value());
  EXPECT_EQ(ended->error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(CoordinatorTest, Heartbeat_ReportingRanksNobodyExpects_IsAnsweredWithAStopJob) {
  auto a = agent("node-a", "10.0.0.11:7000", 1);
  a->join();
  const std::string id = submit_ok(spec());
  a->expect_start();  // the stream is live from here on
  await_state(id, v1::JOB_STATE_RUNNING);
  ASSERT_TRUE(a->heartbeat({running(id, 0, {0}), running("ghost-job", 3, {0})}).ok());
  const v1::StopJob stop = a->expect_stop();
  EXPECT_EQ(stop.job_id(), "ghost-job");
  EXPECT_EQ(stop.generation(), 3);
  EXPECT_EQ(a->queued(), 0u) << "the expected generation was stopped too";
}

TEST_F(CoordinatorTest, StopJobLostWithADroppedStream_IsSentAgain_WhileTheOldGenerationStillRuns) {
  auto a = agent("node-a", "10.0.0.11:7000", 1);
  auto b = agent("node-b", "10.0.0.12:7000", 1);
  a->join();
  b->join();
  const std::string id = submit_ok(spec(1, 2, /*max_restarts=*/1));
  a->expect_start();
  b->expect_start();
  await_state(id, v1::JOB_STATE_RUNNING);
  // node-a's stream drops; meanwhile rank 1 fails and the job restarts.
  a->close_stream();
  ASSERT_TRUE(b->exited(id, 1, 0, 3).ok());
  ASSERT_EQ(get_ok(id).state(), v1::JOB_STATE_RESTARTING);
  b->expect_stop();
  // node-a reconnects and says rank 0 of generation 0 still runs: it must be told to stop
  // (on the new stream, or in answer to the heartbeat), or the restart waits forever.
  a->open_stream();
  ASSERT_TRUE(a->heartbeat({running(id, 0, {0})}).ok());
  const v1::StopJob stop = a->expect_stop();
  EXPECT_EQ(stop.job_id(), id);
  EXPECT_EQ(stop.generation(), 0);
  EXPECT_EQ(stop.reason(), v1::StopJob::REASON_RESTART);
  ASSERT_TRUE(a->stopped(id, 0, 0).ok());
  // Further copies of the stop (the stream's and the heartbeat's) may come first; being
  // for generation 0 and older, none can stop what replaces it.
  v1::StartRanks next;
  for (int i = 0; i < 3 && !next.has_spec(); ++i) {
    const auto assignment = a->next();
    ASSERT_TRUE(assignment.has_value()) << "no StartRanks for generation 1";
    if (assignment->has_stop()) {
      EXPECT_EQ(assignment->stop().generation(), 0);
    } else {
      next = assignment->start();
    }
  }
  EXPECT_EQ(next.generation(), 1);
  EXPECT_EQ(await_state(id, v1::JOB_STATE_RUNNING).restart_count(), 1);
}

TEST_F(CoordinatorTest, SecondAssignmentStream_ClosesTheFirstWithAborted_AndResendsWhatShouldRun) {
  auto a = agent("node-a", "10.0.0.11:7000", 1);
  a->join();
  const std::string id = submit_ok(spec());
  const v1::StartRanks start = a->expect_start();
  await_state(id, v1::JOB_STATE_RUNNING);
  FakeAgent twin(agents_, "node-a", "10.0.0.11:7000", 1);
  twin.set_id(a->id());
  twin.open_stream();
  const auto ended = a->stream_ended();
  ASSERT_TRUE(ended.has_value());
  EXPECT_EQ(ended->error_code(), grpc::StatusCode::ABORTED);
  EXPECT_TRUE(MessageDifferencer::Equals(twin.expect_start(), start));
}

}  // namespace
