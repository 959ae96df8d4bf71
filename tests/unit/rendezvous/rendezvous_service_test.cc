// RendezvousServiceImpl against the status-code contract of proto/fabric/v1/rendezvous.proto,
// served by a real grpc::Server on 127.0.0.1 and called through a real stub. Calls that
// must block run on threads, and the tests wait for them to block with
// wait_for_blocked_calls (a condition variable), never by sleeping.

#include "rendezvous/rendezvous_service.h"

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "fabric/v1/rendezvous.grpc.pb.h"

namespace {

namespace v1 = fabric::v1;
using fabric::launcher::RendezvousJobOptions;
using fabric::launcher::RendezvousServiceImpl;
using namespace std::chrono_literals;
using namespace std::string_literals;

constexpr const char* kJob = "job-7";
constexpr const char* kSecret = "secret-of-job-7";
constexpr std::int32_t kWorldSize = 4;
// How long a test waits for something that should happen at once; a failure, not a pause.
constexpr auto kPatience = 20s;

void set_timeout(google::protobuf::Duration* d, std::chrono::milliseconds t) {
  d->set_seconds(t.count() / 1000);
  d->set_nanos(static_cast<std::int32_t>(t.count() % 1000) * 1'000'000);
}

class RendezvousServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    service_.start_job(kJob, kWorldSize, RendezvousJobOptions{.heartbeat_interval = 7s, .secret = kSecret});
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port, 0);
    stub_ = v1::RendezvousService::NewStub(
        grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));
  }

  void TearDown() override {
    service_.shutdown();
    server_->Shutdown();
  }

  static v1::RankContext context(std::int32_t rank = 0, std::int32_t generation = 0, const std::string& job = kJob) {
    v1::RankContext c;
    c.set_job_id(job);
    c.set_generation(generation);
    c.set_rank(rank);
    return c;
  }

  // Every call carries a client deadline, so a server bug fails a test instead of hanging it,
  // and the job's secret (`secret`; none when empty).
  static std::unique_ptr<grpc::ClientContext> client(const std::string& secret = kSecret) {
    auto c = std::make_unique<grpc::ClientContext>();
    c->set_deadline(std::chrono::system_clock::now() + 60s);
    if (!secret.empty()) c->AddMetadata("fabricd-job-secret", secret);
    return c;
  }

  grpc::Status set(const std::string& key, const std::string& value, std::int32_t rank = 0,
                   std::int32_t generation = 0) {
    v1::SetRequest request;
    *request.mutable_context() = context(rank, generation);
    request.set_key(key);
    request.set_value(value);
    v1::SetResponse response;
    return stub_->Set(client().get(), request, &response);
  }

  grpc::Status get(const std::string& key, std::string* value,
                   std::optional<std::chrono::milliseconds> timeout = std::nullopt, std::int32_t generation = 0) {
    v1::GetRequest request;
    *request.mutable_context() = context(1, generation);
    request.set_key(key);
    if (timeout) set_timeout(request.mutable_timeout(), *timeout);
    v1::GetResponse response;
    grpc::Status status = stub_->Get(client().get(), request, &response);
    if (value != nullptr) *value = response.value();
    return status;
  }

  grpc::Status add(const std::string& key, std::int64_t amount, std::int64_t* sum) {
    v1::AddRequest request;
    *request.mutable_context() = context();
    request.set_key(key);
    request.set_amount(amount);
    v1::AddResponse response;
    grpc::Status status = stub_->Add(client().get(), request, &response);
    *sum = response.value();
    return status;
  }

  v1::CompareSetResponse compare_set(const std::string& key, const std::string& expected, const std::string& desired) {
    v1::CompareSetRequest request;
    *request.mutable_context() = context();
    request.set_key(key);
    request.set_expected_value(expected);
    request.set_desired_value(desired);
    v1::CompareSetResponse response;
    EXPECT_TRUE(stub_->CompareSet(client().get(), request, &response).ok());
    return response;
  }

  grpc::Status wait(const std::vector<std::string>& keys, std::chrono::milliseconds timeout) {
    v1::WaitRequest request;
    *request.mutable_context() = context(2);
    for (const auto& k : keys) request.add_keys(k);
    set_timeout(request.mutable_timeout(), timeout);
    v1::WaitResponse response;
    return stub_->Wait(client().get(), request, &response);
  }

  bool check(const std::vector<std::string>& keys) {
    v1::CheckRequest request;
    *request.mutable_context() = context();
    for (const auto& k : keys) request.add_keys(k);
    v1::CheckResponse response;
    EXPECT_TRUE(stub_->Check(client().get(), request, &response).ok());
    return response.ready();
  }

  bool delete_key(const std::string& key) {
    v1::DeleteKeyRequest request;
    *request.mutable_context() = context();
    request.set_key(key);
    v1::DeleteKeyResponse response;
    EXPECT_TRUE(stub_->DeleteKey(client().get(), request, &response).ok());
    return response.deleted();
  }

  std::int64_t num_keys(std::int32_t generation = 0) {
    v1::NumKeysRequest request;
    *request.mutable_context() = context(0, generation);
    v1::NumKeysResponse response;
    EXPECT_TRUE(stub_->NumKeys(client().get(), request, &response).ok());
    return response.num_keys();
  }

  grpc::Status barrier(std::int32_t rank, const std::string& name, std::int64_t sequence,
                       std::chrono::milliseconds timeout, std::int32_t world_size = 0) {
    v1::BarrierRequest request;
    *request.mutable_context() = context(rank);
    request.set_name(name);
    request.set_sequence(sequence);
    request.set_world_size(world_size);
    set_timeout(request.mutable_timeout(), timeout);
    v1::BarrierResponse response;
    return stub_->Barrier(client().get(), request, &response);
  }

  void await_blocked(int count) {
    ASSERT_TRUE(service_.wait_for_blocked_calls(kJob, count, kPatience)) << count << " calls never blocked";
  }

  RendezvousServiceImpl service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<v1::RendezvousService::Stub> stub_;
};

#define EXPECT_CODE(status, code_)                                             \
  do {                                                                         \
    const grpc::Status s_ = (status);                                          \
    EXPECT_EQ(s_.error_code(), grpc::StatusCode::code_) << s_.error_message(); \
  } while (0)

// --- Store verbs ----------------------------------------------------------------------

TEST_F(RendezvousServiceTest, SetThenGet_ReturnsTheBytesAndOverwrites) {
  const std::string binary = "\0\xff\x01 not utf-8"s;
  ASSERT_TRUE(set("/pg/0/addr", binary).ok());
  std::string value;
  ASSERT_TRUE(get("/pg/0/addr", &value).ok());
  EXPECT_EQ(value, binary);

  ASSERT_TRUE(set("/pg/0/addr", "second").ok());
  ASSERT_TRUE(get("/pg/0/addr", &value).ok());
  EXPECT_EQ(value, "second");
}

TEST_F(RendezvousServiceTest, Add_KeepsADecimalCounterThatGetReads) {
  std::int64_t sum = 0;
  ASSERT_TRUE(add("counter", 2, &sum).ok());
  EXPECT_EQ(sum, 2);
  ASSERT_TRUE(add("counter", 1, &sum).ok());
  EXPECT_EQ(sum, 3);
  std::string value;
  ASSERT_TRUE(get("counter", &value).ok());
  EXPECT_EQ(value, "3");
  ASSERT_TRUE(add("counter", -5, &sum).ok());
  EXPECT_EQ(sum, -2);
  ASSERT_TRUE(add("counter", 0, &sum).ok());
  EXPECT_EQ(sum, -2);

  // A missing key counts as 0 and is created, as TCPStore does.
  ASSERT_TRUE(add("fresh", 0, &sum).ok());
  EXPECT_EQ(sum, 0);
  EXPECT_TRUE(check({"fresh"}));

  // A value Set as decimal text is a counter too.
  ASSERT_TRUE(set("preset", "40").ok());
  ASSERT_TRUE(add("preset", 2, &sum).ok());
  EXPECT_EQ(sum, 42);
}

TEST_F(RendezvousServiceTest, Add_RefusesNonDecimalValuesAndOverflow) {
  ASSERT_TRUE(set("text", "hello").ok());
  std::int64_t sum = 0;
  const grpc::Status not_a_number = add("text", 1, &sum);
  EXPECT_CODE(not_a_number, INVALID_ARGUMENT);
  EXPECT_NE(not_a_number.error_message().find("\"text\""), std::string::npos);
  ASSERT_TRUE(set("partial", "12abc").ok());
  EXPECT_CODE(add("partial", 1, &sum), INVALID_ARGUMENT);

  ASSERT_TRUE(set("big", std::to_string(std::numeric_limits<std::int64_t>::max())).ok());
  EXPECT_CODE(add("big", 1, &sum), OUT_OF_RANGE);
  std::string value;
  ASSERT_TRUE(get("big", &value).ok());
  EXPECT_EQ(value, std::to_string(std::numeric_limits<std::int64_t>::max()))
      << "a refused Add must leave the counter unchanged";
}

TEST_F(RendezvousServiceTest, CompareSet_FollowsC10dSemantics) {
  // Missing key, empty expected value: stored.
  v1::CompareSetResponse r = compare_set("k", "", "first");
  EXPECT_TRUE(r.swapped());
  EXPECT_EQ(r.value(), "first");

  // Existing key, expected value matches: swapped.
  r = compare_set("k", "first", "second");
  EXPECT_TRUE(r.swapped());
  EXPECT_EQ(r.value(), "second");

  // Existing key, mismatch: the current value, unchanged.
  r = compare_set("k", "first", "third");
  EXPECT_FALSE(r.swapped());
  EXPECT_EQ(r.value(), "second");

  // Missing key, non-empty expected value: answers expected_value (TCPStore), stores nothing.
  r = compare_set("absent", "guess", "x");
  EXPECT_FALSE(r.swapped());
  EXPECT_EQ(r.value(), "guess");
  EXPECT_FALSE(check({"absent"}));
}

TEST_F(RendezvousServiceTest, CheckDeleteAndNumKeys_SeeTheGenerationsStore) {
  EXPECT_EQ(num_keys(), 0);
  EXPECT_TRUE(check({})) << "no keys are vacuously ready";
  ASSERT_TRUE(set("a", "1").ok());
  ASSERT_TRUE(set("b", "2").ok());
  EXPECT_EQ(num_keys(), 2);
  EXPECT_TRUE(check({"a", "b"}));
  EXPECT_FALSE(check({"a", "c"}));

  EXPECT_TRUE(delete_key("a"));
  EXPECT_FALSE(delete_key("a")) << "deleting a missing key is not an error";
  EXPECT_EQ(num_keys(), 1);
  EXPECT_FALSE(check({"a"}));
}

// --- Blocking verbs -------------------------------------------------------------------

TEST_F(RendezvousServiceTest, Get_BlocksUntilAnotherRanksSetArrives) {
  grpc::Status status;
  std::string value;
  std::thread waiter([&] { status = get("/pg/0/addr", &value, std::chrono::milliseconds(30s)); });
  await_blocked(1);
  ASSERT_TRUE(set("/pg/0/addr", "10.0.0.1:29500").ok());
  waiter.join();
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(value, "10.0.0.1:29500");
}

TEST_F(RendezvousServiceTest, Get_TimesOutNamingTheKeyAndTimeout) {
  const grpc::Status status = get("never/set", nullptr, std::chrono::milliseconds(50));
  EXPECT_CODE(status, DEADLINE_EXCEEDED);
  EXPECT_NE(status.error_message().find("\"never/set\""), std::string::npos) << status.error_message();
  EXPECT_NE(status.error_message().find("50ms"), std::string::npos) << status.error_message();
}

TEST_F(RendezvousServiceTest, Wait_ReturnsOnlyWhenEveryKeyIsSet) {
  grpc::Status status{grpc::StatusCode::UNKNOWN, "not returned"};
  std::thread waiter([&] { status = wait({"a", "b", "c"}, 30s); });
  await_blocked(1);
  ASSERT_TRUE(set("a", "").ok());
  ASSERT_TRUE(set("b", "").ok());
  // Still blocked: the counter only drops when the call returns.
  await_blocked(1);
  ASSERT_TRUE(set("c", "").ok());
  waiter.join();
  EXPECT_TRUE(status.ok()) << status.error_message();
}

TEST_F(RendezvousServiceTest, Wait_TimesOutNamingOnlyTheMissingKeys) {
  ASSERT_TRUE(set("present", "").ok());
  const grpc::Status status = wait({"present", "gone1", "gone2"}, 50ms);
  EXPECT_CODE(status, DEADLINE_EXCEEDED);
  const std::string& m = status.error_message();
  EXPECT_NE(m.find("\"gone1\""), std::string::npos) << m;
  EXPECT_NE(m.find("\"gone2\""), std::string::npos) << m;
  EXPECT_EQ(m.find("\"present\""), std::string::npos) << m;
}

// --- Generations ----------------------------------------------------------------------

TEST_F(RendezvousServiceTest, StaleGeneration_IsRefusedWithFailedPrecondition) {
  ASSERT_TRUE(set("old", "x").ok());
  service_.begin_generation(kJob, 1);
  EXPECT_EQ(service_.generation(kJob), 1);

  const grpc::Status stale = set("k", "v", /*rank=*/0, /*generation=*/0);
  EXPECT_CODE(stale, FAILED_PRECONDITION);
  EXPECT_NE(stale.error_message().find("generation 1"), std::string::npos) << stale.error_message();
  EXPECT_NE(stale.error_message().find("generation 0"), std::string::npos) << stale.error_message();
  EXPECT_CODE(set("k", "v", 0, /*generation=*/2), FAILED_PRECONDITION);

  EXPECT_EQ(num_keys(/*generation=*/1), 0) << "each generation starts with an empty store";
  EXPECT_TRUE(set("k", "v", 0, 1).ok());
}

TEST_F(RendezvousServiceTest, BeginGeneration_ReleasesOldWaitersWithAborted) {
  grpc::Status get_status;
  grpc::Status barrier_status;
  // Timeout zero is c10d's kNoTimeout: only the end of the generation can release them.
  std::thread getter([&] { get_status = get("never", nullptr, std::chrono::milliseconds(0)); });
  std::thread arriver([&] { barrier_status = barrier(3, "epoch_end", 0, 0ms); });
  await_blocked(2);
  const auto started = std::chrono::steady_clock::now();
  service_.begin_generation(kJob, 1);
  getter.join();
  arriver.join();
  EXPECT_CODE(get_status, ABORTED);
  EXPECT_CODE(barrier_status, ABORTED);
  EXPECT_LT(std::chrono::steady_clock::now() - started, 10s) << "woken at once, not timed out";
}

TEST_F(RendezvousServiceTest, EndJob_ReleasesWaitersWithAbortedThenAnswersNotFound) {
  grpc::Status status;
  std::thread getter([&] { status = get("never", nullptr, std::chrono::milliseconds(0)); });
  await_blocked(1);
  EXPECT_TRUE(service_.end_job(kJob));
  getter.join();
  EXPECT_CODE(status, ABORTED);
  EXPECT_CODE(set("k", "v"), NOT_FOUND);
  EXPECT_FALSE(service_.end_job(kJob));
}

TEST_F(RendezvousServiceTest, Shutdown_ReleasesWaitersWithUnavailable) {
  grpc::Status status;
  std::thread getter([&] { status = get("never", nullptr, std::chrono::milliseconds(0)); });
  await_blocked(1);
  service_.shutdown();
  getter.join();
  EXPECT_CODE(status, UNAVAILABLE);
  EXPECT_CODE(set("k", "v"), UNAVAILABLE);
}

// --- Barrier --------------------------------------------------------------------------

TEST_F(RendezvousServiceTest, Barrier_ReleasesAllRanksOnceEveryoneArrives) {
  for (std::int64_t sequence = 0; sequence < 2; ++sequence) {  // the name is reusable
    std::vector<grpc::Status> statuses(kWorldSize);
    std::vector<std::thread> ranks;
    for (std::int32_t r = 0; r < kWorldSize; ++r) {
      ranks.emplace_back([&, r] { statuses[r] = barrier(r, "epoch_end", sequence, 30s); });
    }
    for (auto& t : ranks) t.join();
    for (std::int32_t r = 0; r < kWorldSize; ++r) {
      EXPECT_TRUE(statuses[r].ok()) << "rank " << r << ": " << statuses[r].error_message();
    }
  }
  // A retried arrival after completion is answered at once.
  EXPECT_TRUE(barrier(0, "epoch_end", 0, 50ms).ok());
}

TEST_F(RendezvousServiceTest, Barrier_TimesOutNamingTheMissingRanks) {
  // Rank 2's arrival still counts after its own call timed out.
  EXPECT_CODE(barrier(2, "rank_zero_first/download", 0, 10ms), DEADLINE_EXCEEDED);
  const grpc::Status status = barrier(0, "rank_zero_first/download", 0, 50ms);
  EXPECT_CODE(status, DEADLINE_EXCEEDED);
  const std::string& m = status.error_message();
  EXPECT_NE(m.find("ranks 1, 3 did not arrive"), std::string::npos) << m;
  EXPECT_NE(m.find("rank_zero_first/download"), std::string::npos) << m;

  // Once the missing ranks come, everyone who is still waiting is released.
  grpc::Status waiting_zero;
  std::thread zero([&] { waiting_zero = barrier(0, "rank_zero_first/download", 0, 30s); });
  await_blocked(1);
  std::thread one([&] { EXPECT_TRUE(barrier(1, "rank_zero_first/download", 0, 30s).ok()); });
  EXPECT_TRUE(barrier(3, "rank_zero_first/download", 0, 30s).ok());
  zero.join();
  one.join();
  EXPECT_TRUE(waiting_zero.ok()) << waiting_zero.error_message();
}

TEST_F(RendezvousServiceTest, Barrier_OfASubsetCountsArrivalsAndChecksWorldSize) {
  const grpc::Status partial = barrier(1, "pair", 0, 20ms, /*world_size=*/2);
  EXPECT_CODE(partial, DEADLINE_EXCEEDED);
  EXPECT_NE(partial.error_message().find("1 of 2"), std::string::npos) << partial.error_message();
  EXPECT_CODE(barrier(0, "pair", 0, 20ms, /*world_size=*/3), INVALID_ARGUMENT);
  EXPECT_CODE(barrier(0, "too_big", 0, 20ms, kWorldSize + 1), INVALID_ARGUMENT);
  EXPECT_TRUE(barrier(3, "pair", 0, 30s, 2).ok());
}

// --- Health ---------------------------------------------------------------------------

TEST_F(RendezvousServiceTest, Heartbeat_IsVisibleToTheSupervisor) {
  EXPECT_FALSE(service_.last_heartbeat(kJob, 3).has_value());
  const auto before = std::chrono::steady_clock::now();
  v1::RankHeartbeatRequest request;
  *request.mutable_context() = context(3);
  request.set_step(1200);
  request.set_phase("checkpoint");
  v1::RankHeartbeatResponse response;
  ASSERT_TRUE(stub_->Heartbeat(client().get(), request, &response).ok());

  const auto beat = service_.last_heartbeat(kJob, 3);
  ASSERT_TRUE(beat.has_value());
  EXPECT_EQ(beat->step, 1200);
  EXPECT_FALSE(beat->epoch.has_value());
  EXPECT_EQ(beat->phase, "checkpoint");
  EXPECT_GE(beat->received_at, before);
  EXPECT_LE(beat->received_at, std::chrono::steady_clock::now());
  EXPECT_EQ(response.interval().seconds(), 7);
  EXPECT_FALSE(response.stop_requested());
  EXPECT_FALSE(service_.last_heartbeat(kJob, 2).has_value());

  ASSERT_TRUE(service_.request_stop(kJob, "cancelled by alice"));
  ASSERT_TRUE(stub_->Heartbeat(client().get(), request, &response).ok());
  EXPECT_TRUE(response.stop_requested());
  EXPECT_EQ(response.stop_reason(), "cancelled by alice");

  service_.begin_generation(kJob, 1);
  EXPECT_FALSE(service_.last_heartbeat(kJob, 3).has_value()) << "per generation";
}

TEST_F(RendezvousServiceTest, ReportError_IsVisibleToTheSupervisorAndReplacedByASecond) {
  EXPECT_TRUE(service_.reported_errors(kJob).empty());
  v1::ReportErrorRequest request;
  *request.mutable_context() = context(2);
  request.mutable_error()->set_message("CUDA out of memory");
  request.mutable_error()->set_error_type("c10::OutOfMemoryError");
  v1::ReportErrorResponse response;
  ASSERT_TRUE(stub_->ReportError(client().get(), request, &response).ok());
  request.mutable_error()->set_message("CUDA out of memory (again)");
  ASSERT_TRUE(stub_->ReportError(client().get(), request, &response).ok());

  const auto errors = service_.reported_errors(kJob);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors.at(2).message(), "CUDA out of memory (again)");
  EXPECT_EQ(errors.at(2).error_type(), "c10::OutOfMemoryError");
}

// --- Bad requests ---------------------------------------------------------------------

TEST_F(RendezvousServiceTest, UnknownJob_IsNotFound) {
  v1::SetRequest request;
  *request.mutable_context() = context(0, 0, "no-such-job");
  request.set_key("k");
  v1::SetResponse response;
  const grpc::Status status = stub_->Set(client().get(), request, &response);
  EXPECT_CODE(status, NOT_FOUND);
  EXPECT_NE(status.error_message().find("no-such-job"), std::string::npos);
  EXPECT_NE(status.error_message().find("FABRICD_ENDPOINT"), std::string::npos);
}

TEST_F(RendezvousServiceTest, MalformedRequests_AreInvalidArgument) {
  EXPECT_CODE(set("", "v"), INVALID_ARGUMENT);
  EXPECT_CODE(get("", nullptr, std::chrono::milliseconds(10)), INVALID_ARGUMENT);
  EXPECT_CODE(wait({"a", ""}, 10ms), INVALID_ARGUMENT);
  EXPECT_CODE(set("k", "v", /*rank=*/kWorldSize), INVALID_ARGUMENT);
  EXPECT_CODE(set("k", "v", /*rank=*/-1), INVALID_ARGUMENT);
  EXPECT_CODE(set("k", "v", 0, /*generation=*/-1), INVALID_ARGUMENT);

  v1::SetRequest no_context;
  no_context.set_key("k");
  v1::SetResponse response;
  EXPECT_CODE(stub_->Set(client().get(), no_context, &response), INVALID_ARGUMENT);

  v1::GetRequest negative_timeout;
  *negative_timeout.mutable_context() = context();
  negative_timeout.set_key("k");
  negative_timeout.mutable_timeout()->set_seconds(-1);
  v1::GetResponse get_response;
  EXPECT_CODE(stub_->Get(client().get(), negative_timeout, &get_response), INVALID_ARGUMENT);
  EXPECT_EQ(num_keys(), 0) << "refused requests change nothing";
}

// A process without the job's secret, and a rank of another job served by the same
// launcher, are refused before they touch the store; the secret's owner is served.
TEST_F(RendezvousServiceTest, CallsWithoutTheJobsSecretAreUnauthenticated) {
  service_.start_job("job-8", kWorldSize, RendezvousJobOptions{.secret = "secret-of-job-8"});
  ASSERT_TRUE(set("k", "job 7's").ok());
  v1::GetRequest request;
  *request.mutable_context() = context(0);
  request.set_key("k");
  request.mutable_timeout()->set_seconds(0);
  request.mutable_timeout()->set_nanos(1'000'000);
  v1::GetResponse response;
  const grpc::Status none = stub_->Get(client("").get(), request, &response);
  EXPECT_CODE(none, UNAUTHENTICATED);
  EXPECT_NE(none.error_message().find("FABRICD_JOB_SECRET"), std::string::npos) << none.error_message();
  // A rank of job-8 reads job-7's store.
  EXPECT_CODE(stub_->Get(client("secret-of-job-8").get(), request, &response), UNAUTHENTICATED);
  EXPECT_CODE(stub_->Get(client(std::string(kSecret) + "x").get(), request, &response), UNAUTHENTICATED);
  EXPECT_TRUE(response.value().empty()) << "a refused Get answered a value";

  v1::SetRequest write;
  *write.mutable_context() = context(0);
  write.set_key("k");
  write.set_value("overwritten");
  v1::SetResponse write_response;
  EXPECT_CODE(stub_->Set(client("secret-of-job-8").get(), write, &write_response), UNAUTHENTICATED);
  EXPECT_CODE(stub_->Set(client("").get(), write, &write_response), UNAUTHENTICATED);
  std::string value;
  ASSERT_TRUE(get("k", &value).ok());
  EXPECT_EQ(value, "job 7's") << "a refused Set changed the store";
  EXPECT_EQ(num_keys(), 1);
}

TEST(RendezvousServiceLimits, AStoreBeyondItsKeysOrBytesIsResourceExhausted) {
  RendezvousServiceImpl service(0ms, {.max_keys_per_job = 3, .max_bytes_per_job = 100});
  service.start_job("j", 1, {.secret = "s"});
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  const std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  auto stub = v1::RendezvousService::NewStub(
      grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));
  const auto put = [&](const std::string& key, const std::string& value) {
    v1::SetRequest request;
    request.mutable_context()->set_job_id("j");
    request.set_key(key);
    request.set_value(value);
    grpc::ClientContext context;
    context.AddMetadata("fabricd-job-secret", "s");
    v1::SetResponse response;
    return stub->Set(&context, request, &response);
  };
  ASSERT_TRUE(put("a", "1").ok());
  ASSERT_TRUE(put("b", "2").ok());
  ASSERT_TRUE(put("c", std::string(40, 'x')).ok());
  const grpc::Status keys = put("d", "4");
  EXPECT_CODE(keys, RESOURCE_EXHAUSTED);
  EXPECT_NE(keys.error_message().find("limit of keys per job store (3)"), std::string::npos) << keys.error_message();
  EXPECT_TRUE(put("a", "overwriting an existing key adds no key").ok());
  const grpc::Status bytes = put("c", std::string(90, 'y'));
  EXPECT_CODE(bytes, RESOURCE_EXHAUSTED);
  EXPECT_NE(bytes.error_message().find("limit of bytes per job store (100"), std::string::npos) << bytes.error_message();
  EXPECT_TRUE(put("c", "small again").ok()) << "a smaller value gives its bytes back";
  service.shutdown();
  server->Shutdown();
}

TEST(RendezvousServiceApi, MisuseThrows) {
  RendezvousServiceImpl service;
  EXPECT_THROW(service.start_job("", 2, {.secret = "s"}), std::invalid_argument);
  EXPECT_THROW(service.start_job("j", 0, {.secret = "s"}), std::invalid_argument);
  EXPECT_THROW(service.start_job("j", 2), std::invalid_argument) << "a job without a secret";
  service.start_job("j", 2, {.secret = "s"});
  EXPECT_THROW(service.start_job("j", 2, {.secret = "s"}), std::invalid_argument);
  EXPECT_THROW(service.begin_generation("j", 0), std::invalid_argument);
  EXPECT_THROW(service.begin_generation("other", 1), std::invalid_argument);
  EXPECT_FALSE(service.generation("other").has_value());
  EXPECT_TRUE(service.reported_errors("other").empty());
}

}  // namespace
