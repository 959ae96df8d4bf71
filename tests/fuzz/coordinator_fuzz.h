// The two coordinator harnesses (job_service_fuzzer.cc, agent_service_fuzzer.cc) share this:
// one grpc::Server, started on the first input and never stopped, that serves JobService and
// AgentService through thin forwarding services to the Coordinator of the current input, so
// that each input gets a fresh Coordinator (over an in-memory JobStore) while every call
// still goes through a real server, with real metadata: bearer tokens of an admin and two
// users, none, or garbage.
//
// An input is a short sequence of steps (`Steps::run`): a call of either service with a
// request built field by field from the input (ids taken mostly from what earlier answers
// gave) or parsed from raw bytes, raw bytes on the wire to any method or to one that does
// not exist, the fake clock jumping (agents go silent and are lost), a restart of the
// coordinator over the same store. Streams (WatchJob, StreamLogs, StreamAssignments) carry
// deadlines of a few milliseconds. At the end the coordinator is shut down and destroyed
// once no handler runs any more; nothing carries over to the next input.
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "coordinator/coordinator.h"
#include "fabric/v1/agent.grpc.pb.h"
#include "fabric/v1/job.grpc.pb.h"
#include "fuzz_support.h"
#include "jobs/job_store.h"
#include "security/authenticator.h"
#include "security/tokens.h"

namespace fabric::fuzz {

namespace v1 = fabric::v1;
using launcher::Coordinator;

inline const std::vector<std::string> kTokens = {"tok-admin-0123456789", "tok-alice-0123456789",
                                                 "tok-bob-0123456789ab"};

// The JobStore every coordinator of one input shares, so a restarted one loads what the
// last one wrote.
class SharedStore final : public launcher::JobStore {
 public:
  explicit SharedStore(std::shared_ptr<launcher::JobStore> inner) : inner_(std::move(inner)) {}
  void put_job(launcher::StoredJob& job) override { inner_->put_job(job); }
  void delete_job(const std::string& id) override { inner_->delete_job(id); }
  std::vector<launcher::StoredJob> load_jobs() override { return inner_->load_jobs(); }
  void put_session(const launcher::StoredSession& s) override { inner_->put_session(s); }
  void delete_session(const std::string& id) override { inner_->delete_session(id); }
  std::vector<launcher::StoredSession> load_sessions() override { return inner_->load_sessions(); }

 private:
  std::shared_ptr<launcher::JobStore> inner_;
};

// Which coordinator the forwarding services call, and how many calls are inside it.
struct Current {
  std::atomic<Coordinator*> coordinator{nullptr};
  std::atomic<int> inside{0};

  // Runs `call` on the current coordinator (UNAVAILABLE between two of them).
  template <typename Call>
  grpc::Status with(Call call) {
    ++inside;
    Coordinator* c = coordinator.load();
    const grpc::Status status = c ? call(*c) : grpc::Status(grpc::StatusCode::UNAVAILABLE, "between coordinators");
    --inside;
    return status;
  }

  // Shuts the coordinator down and destroys it once no handler is inside it.
  void retire(std::unique_ptr<Coordinator>& owned) {
    if (!owned) return;
    coordinator.store(nullptr);
    owned->shutdown();
    while (inside.load() != 0) std::this_thread::sleep_for(std::chrono::microseconds(50));
    owned.reset();
  }
};

class ForwardJobs final : public v1::JobService::Service {
 public:
  explicit ForwardJobs(Current& current) : current_(current) {}
  grpc::Status SubmitJob(grpc::ServerContext* c, const v1::SubmitJobRequest* q, v1::SubmitJobResponse* r) override {
    return current_.with([&](Coordinator& co) { return co.job_service().SubmitJob(c, q, r); });
  }
  grpc::Status GetJob(grpc::ServerContext* c, const v1::GetJobRequest* q, v1::Job* r) override {
    return current_.with([&](Coordinator& co) { return co.job_service().GetJob(c, q, r); });
  }
  grpc::Status ListJobs(grpc::ServerContext* c, const v1::ListJobsRequest* q, v1::ListJobsResponse* r) override {
    return current_.with([&](Coordinator& co) { return co.job_service().ListJobs(c, q, r); });
  }
  grpc::Status CancelJob(grpc::ServerContext* c, const v1::CancelJobRequest* q, v1::Job* r) override {
    return current_.with([&](Coordinator& co) { return co.job_service().CancelJob(c, q, r); });
  }
  grpc::Status WatchJob(grpc::ServerContext* c, const v1::WatchJobRequest* q,
                        grpc::ServerWriter<v1::JobEvent>* w) override {
    return current_.with([&](Coordinator& co) { return co.job_service().WatchJob(c, q, w); });
  }
  grpc::Status StreamLogs(grpc::ServerContext* c, const v1::StreamLogsRequest* q,
                          grpc::ServerWriter<v1::LogLine>* w) override {
    return current_.with([&](Coordinator& co) { return co.job_service().StreamLogs(c, q, w); });
  }

 private:
  Current& current_;
};

class ForwardAgents final : public v1::AgentService::Service {
 public:
  explicit ForwardAgents(Current& current) : current_(current) {}
  grpc::Status Register(grpc::ServerContext* c, const v1::RegisterRequest* q, v1::RegisterResponse* r) override {
    return current_.with([&](Coordinator& co) { return co.agent_service().Register(c, q, r); });
  }
  grpc::Status Heartbeat(grpc::ServerContext* c, const v1::AgentHeartbeatRequest* q,
                         v1::AgentHeartbeatResponse* r) override {
    return current_.with([&](Coordinator& co) { return co.agent_service().Heartbeat(c, q, r); });
  }
  grpc::Status StreamAssignments(grpc::ServerContext* c, const v1::StreamAssignmentsRequest* q,
                                 grpc::ServerWriter<v1::Assignment>* w) override {
    return current_.with([&](Coordinator& co) { return co.agent_service().StreamAssignments(c, q, w); });
  }
  grpc::Status ReportRankExit(grpc::ServerContext* c, const v1::ReportRankExitRequest* q,
                              v1::ReportRankExitResponse* r) override {
    return current_.with([&](Coordinator& co) { return co.agent_service().ReportRankExit(c, q, r); });
  }
  grpc::Status PushLogs(grpc::ServerContext* c, grpc::ServerReader<v1::PushLogsRequest>* q,
                        v1::PushLogsResponse* r) override {
    return current_.with([&](Coordinator& co) { return co.agent_service().PushLogs(c, q, r); });
  }

 private:
  Current& current_;
};

struct CoordinatorWorld {
  Current current;
  ForwardJobs jobs{current};
  ForwardAgents agents{current};
  std::unique_ptr<grpc::Server> server;
  std::unique_ptr<v1::JobService::Stub> job_stub;
  std::unique_ptr<v1::AgentService::Stub> agent_stub;
  std::unique_ptr<grpc::GenericStub> generic;
  std::shared_ptr<const launcher::Authenticator> authenticator;
  // The coordinators' clock: real time plus what the inputs have jumped it by.
  std::atomic<std::int64_t> clock_offset_ms{0};

  CoordinatorWorld() {
    quiet_protobuf();
    launcher::AuthenticatorOptions auth{.tokens = launcher::TokenTable::parse(
                                            kTokens[0] + " admin admin\n" + kTokens[1] + " alice\n" + kTokens[2] + " bob\n",
                                            "fuzz tokens"),
                                        .tls = false};
    authenticator = std::make_shared<const launcher::Authenticator>(std::move(auth));
    grpc::ServerBuilder builder;
    builder.RegisterService(&jobs);
    builder.RegisterService(&agents);
    server = builder.BuildAndStart();
    auto channel = server->InProcessChannel(grpc::ChannelArguments());
    job_stub = v1::JobService::NewStub(channel);
    agent_stub = v1::AgentService::NewStub(channel);
    generic = std::make_unique<grpc::GenericStub>(channel);
  }

  std::unique_ptr<Coordinator> make(std::shared_ptr<launcher::JobStore> store, bool open) {
    auto coordinator = std::make_unique<Coordinator>(launcher::CoordinatorOptions{
        .store = std::make_unique<SharedStore>(std::move(store)),
        .agent_heartbeat_interval = std::chrono::milliseconds(1000),
        .agent_heartbeat_timeout = std::chrono::milliseconds(5000),
        // Small limits, so that an input reaches them.
        .finished_jobs_kept = 3,
        .max_unfinished_jobs = 12,
        .max_pending_jobs_per_user = 6,
        .max_streams_per_user = 2,
        .authenticator = open ? std::make_shared<const launcher::Authenticator>(launcher::Authenticator::open_to_all())
                              : authenticator,
        .tick = std::chrono::milliseconds(2),
        .clock = [this] {
          return std::chrono::steady_clock::now() + std::chrono::milliseconds(clock_offset_ms.load());
        }});
    current.coordinator.store(coordinator.get());
    return coordinator;
  }
};

inline CoordinatorWorld& coordinator_world() {
  static CoordinatorWorld* world = new CoordinatorWorld();  // never destroyed
  return *world;
}

// One input: its coordinator, and the ids the answers have given so far.
class Steps {
 public:
  explicit Steps(FuzzedDataProvider& in) : in_(in), world_(coordinator_world()) {
    open_ = in_.ConsumeBool();
    store_ = launcher::in_memory_job_store();
    coordinator_ = world_.make(store_, open_);
    trace("started");
  }
  ~Steps() {
    trace("ran");
    world_.current.retire(coordinator_);
    world_.clock_offset_ms.store(0);
    trace("retired");
  }

  // Weights of the step kinds: [0] control, [1] JobService, [2] AgentService, [3] raw.
  void run(const int (&weights)[4], int max_steps) {
    const int total = weights[0] + weights[1] + weights[2] + weights[3];
    for (int step = 0; step < max_steps && in_.remaining_bytes() > 0; ++step) {
      int pick = in_.ConsumeIntegralInRange<int>(0, total - 1);
      if ((pick -= weights[0]) < 0) {
        control();
      } else if ((pick -= weights[1]) < 0) {
        job_call();
      } else if ((pick -= weights[2]) < 0) {
        agent_call();
      } else {
        raw_wire();
      }
    }
  }

 private:
  static constexpr int kCallMs = 2000;

  const std::chrono::steady_clock::time_point began_ = std::chrono::steady_clock::now();
  FuzzedDataProvider& in_;
  CoordinatorWorld& world_;
  bool open_ = false;
  std::shared_ptr<launcher::JobStore> store_;
  std::unique_ptr<Coordinator> coordinator_;
  std::vector<std::string> job_ids_{"", "no-such-job"};
  std::vector<std::string> agent_ids_{"", "agent-nobody-00000000"};
  std::vector<std::string> nodes_{"n1", "n2", "n3"};
  std::string page_token_;

  // FUZZ_TRACE=1: how long the input's parts took.
  void trace(const char* what) {
    static const bool on = std::getenv("FUZZ_TRACE") != nullptr;
    if (!on) return;
    const auto now = std::chrono::steady_clock::now();
    std::fprintf(stderr, "fuzz: %s after %.1f ms\n", what, std::chrono::duration<double, std::milli>(now - began_).count());
  }

  static void remember(std::vector<std::string>& pool, const std::string& id) {
    if (id.empty() || pool.size() >= 24) return;
    for (const auto& known : pool) {
      if (known == id) return;
    }
    pool.push_back(id);
  }

  bool raw() { return in_.ConsumeIntegralInRange<int>(0, 7) == 0; }
  std::string job_id() { return pick_string(in_, job_ids_, 24); }
  std::string agent_id() { return pick_string(in_, agent_ids_, 24); }
  int stream_ms() { return in_.ConsumeIntegralInRange<int>(1, 10); }

  void credentials(grpc::ClientContext& ctx) {
    const int who = in_.ConsumeIntegralInRange<int>(0, 7);
    if (who < 3) {
      ctx.AddMetadata("authorization", "Bearer " + kTokens[static_cast<std::size_t>(who)]);
    } else if (who == 3) {
      ctx.AddMetadata("authorization", "Bearer tok-mallory-0123456789");
    } else if (who == 4) {
      ctx.AddMetadata("authorization", printable(pick_string(in_, {"Bearer ", "Basic abc", "bearer " + kTokens[0]}, 24)));
    } else if (who == 5) {
      return;  // none: refused unless the coordinator is open
    } else {
      ctx.AddMetadata("authorization", "Bearer " + kTokens[1]);
    }
  }

  void spec(v1::JobSpec& s) {
    s.set_name(pick_string(in_, {"", "digits", "a b/c"}, 40));
    s.set_program(pick_string(in_, {"", "/nonexistent/train", "./train"}, 32));
    for (int i = in_.ConsumeIntegralInRange<int>(0, 3); i > 0; --i) s.add_args(random_text(in_, 16));
    for (int i = in_.ConsumeIntegralInRange<int>(0, 3); i > 0; --i) {
      (*s.mutable_env())[pick_string(in_, {"", "A", "A=B", "OMP_NUM_THREADS"}, 12)] = random_text(in_, 12);
    }
    if (in_.ConsumeBool()) s.set_working_dir(random_text(in_, 16));
    s.set_nproc_per_node(pick_int(in_, 0, 4));
    s.set_num_nodes(pick_int(in_, 0, 3));
    s.set_min_nodes(pick_int(in_, 0, 3));
    s.set_max_restarts(pick_int(in_, 0, 3));
    maybe_duration(in_, [&] { return s.mutable_heartbeat_timeout(); });
    maybe_duration(in_, [&] { return s.mutable_rdzv_timeout(); });
    maybe_duration(in_, [&] { return s.mutable_grace_period(); });
    if (in_.ConsumeBool()) {
      auto& log = *s.mutable_log();
      log.set_tail_lines(pick_int(in_, 0, 8));
      log.set_redirect(static_cast<v1::Streams>(pick_int(in_, 0, 3)));
      log.set_tee(static_cast<v1::Streams>(pick_int(in_, 0, 3)));
      if (in_.ConsumeBool()) log.set_dir("logs");
      for (int i = in_.ConsumeIntegralInRange<int>(0, 2); i > 0; --i) log.add_console_ranks(pick_int(in_, 0, 4));
    }
  }

  void control() {
    switch (in_.ConsumeIntegralInRange<int>(0, 3)) {
      case 0:  // agents' heartbeats go missing
        world_.clock_offset_ms += in_.ConsumeIntegralInRange<std::int64_t>(0, 20'000);
        break;
      case 1:  // the coordinator is killed and restarted over the same store
        world_.current.retire(coordinator_);
        coordinator_ = world_.make(store_, open_);
        break;
      case 2:  // the reconcile thread catches up (placement, expiry)
        std::this_thread::sleep_for(std::chrono::milliseconds(in_.ConsumeIntegralInRange<int>(1, 4)));
        break;
      default:  // a whole node as an agent would bring it: register, stream, heartbeat
        register_agent(nodes_[in_.ConsumeIntegralInRange<std::size_t>(0, nodes_.size() - 1)],
                       in_.ConsumeIntegralInRange<int>(1, 8));
    }
  }

  void register_agent(const std::string& node, int slots) {
    grpc::ClientContext ctx;
    ctx.set_deadline(in_ms(kCallMs));
    v1::RegisterRequest request;
    request.set_node_name(node);
    request.set_address("127.0.0.1:" + std::to_string(20000 + slots));
    request.set_slots(slots);
    request.set_free_port(29500);
    v1::RegisterResponse response;
    const grpc::Status status = world_.agent_stub->Register(&ctx, request, &response);
    check_status(status, "Register", &request);
    if (status.ok()) remember(agent_ids_, response.agent_id());
  }

  void job_call() {
    grpc::ClientContext ctx;
    credentials(ctx);
    switch (in_.ConsumeIntegralInRange<int>(0, 6)) {
      case 0:
      case 1: {
        v1::SubmitJobRequest request;
        if (raw()) {
          from_raw_bytes(in_, request);
        } else {
          spec(*request.mutable_spec());
          request.set_request_id(pick_string(in_, {"", "r1", "r2"}, 16));
        }
        v1::SubmitJobResponse response;
        ctx.set_deadline(in_ms(kCallMs));
        const grpc::Status status = world_.job_stub->SubmitJob(&ctx, request, &response);
        check_status(status, "SubmitJob", &request);
        if (status.ok()) remember(job_ids_, response.job().job_id());
        break;
      }
      case 2: {
        v1::GetJobRequest request;
        if (raw()) {
          from_raw_bytes(in_, request);
        } else {
          request.set_job_id(job_id());
        }
        v1::Job response;
        ctx.set_deadline(in_ms(kCallMs));
        check_status(world_.job_stub->GetJob(&ctx, request, &response), "GetJob", &request);
        break;
      }
      case 3: {
        v1::ListJobsRequest request;
        if (raw()) {
          from_raw_bytes(in_, request);
        } else {
          for (int i = in_.ConsumeIntegralInRange<int>(0, 2); i > 0; --i) {
            request.add_states(static_cast<v1::JobState>(pick_int(in_, 0, 6)));
          }
          request.set_page_size(pick_int(in_, 0, 3));
          request.set_page_token(pick_string(in_, {"", page_token_, "|1", "|x", "2,|99999999999999999999", "|"}, 24));
        }
        v1::ListJobsResponse response;
        ctx.set_deadline(in_ms(kCallMs));
        const grpc::Status status = world_.job_stub->ListJobs(&ctx, request, &response);
        check_status(status, "ListJobs", &request);
        if (status.ok()) {
          page_token_ = response.next_page_token();
          for (const auto& job : response.jobs()) remember(job_ids_, job.job_id());
        }
        break;
      }
      case 4: {
        v1::CancelJobRequest request;
        if (raw()) {
          from_raw_bytes(in_, request);
        } else {
          request.set_job_id(job_id());
          maybe_duration(in_, [&] { return request.mutable_grace_period(); });
          request.set_reason(random_text(in_, 24));
        }
        v1::Job response;
        ctx.set_deadline(in_ms(kCallMs));
        check_status(world_.job_stub->CancelJob(&ctx, request, &response), "CancelJob", &request);
        break;
      }
      case 5: {
        v1::WatchJobRequest request;
        if (raw()) {
          from_raw_bytes(in_, request);
        } else {
          request.set_job_id(job_id());
        }
        ctx.set_deadline(in_ms(stream_ms()));
        auto reader = world_.job_stub->WatchJob(&ctx, request);
        v1::JobEvent event;
        for (int reads = in_.ConsumeIntegralInRange<int>(0, 4); reads > 0 && reader->Read(&event); --reads) {
        }
        ctx.TryCancel();
        check_status(reader->Finish(), "WatchJob", &request);
        break;
      }
      default: {
        v1::StreamLogsRequest request;
        if (raw()) {
          from_raw_bytes(in_, request);
        } else {
          request.set_job_id(job_id());
          for (int i = in_.ConsumeIntegralInRange<int>(0, 2); i > 0; --i) request.add_ranks(pick_int(in_, 0, 4));
          request.set_stream(static_cast<v1::LogStream>(pick_int(in_, 0, 2)));
          request.set_tail_lines(pick_int(in_, -2, 4));
          request.set_follow(in_.ConsumeBool());
        }
        ctx.set_deadline(in_ms(stream_ms()));
        auto reader = world_.job_stub->StreamLogs(&ctx, request);
        v1::LogLine line;
        for (int reads = in_.ConsumeIntegralInRange<int>(0, 4); reads > 0 && reader->Read(&line); --reads) {
        }
        ctx.TryCancel();
        check_status(reader->Finish(), "StreamLogs", &request);
      }
    }
  }

  void rank_exit(v1::RankExit& exit) {
    exit.set_rank(pick_int(in_, 0, 7));
    exit.set_local_rank(pick_int(in_, 0, 3));
    exit.set_generation(pick_int(in_, 0, 3));
    exit.set_cause(static_cast<v1::RankExit::Cause>(pick_int(in_, 0, 6)));
    if (in_.ConsumeBool()) {
      exit.set_exit_code(pick_int(in_, 0, 2));
    } else {
      exit.set_signal(pick_int(in_, 0, 15));
    }
    for (int i = in_.ConsumeIntegralInRange<int>(0, 2); i > 0; --i) exit.add_stderr_tail(in_.ConsumeRandomLengthString(32));
    if (in_.ConsumeBool()) {
      exit.mutable_reported_error()->set_message(pick_string(in_, {"boom"}, 64));
      exit.mutable_reported_error()->set_error_type(random_text(in_, 16));
    }
  }

  void agent_call() {
    grpc::ClientContext ctx;
    switch (in_.ConsumeIntegralInRange<int>(0, 5)) {
      case 0: {
        v1::RegisterRequest request;
        if (raw()) {
          from_raw_bytes(in_, request);
        } else {
          request.set_node_name(pick_string(in_, nodes_, 24));
          request.set_address(pick_string(in_, {"127.0.0.1:7000", "h:", ":1", "nocolon", "[::1]:9"}, 24));
          request.set_slots(pick_int(in_, 0, 8));
          request.set_agent_version(random_text(in_, 8));
          request.set_free_port(pick_int(in_, 0, 65535));
        }
        v1::RegisterResponse response;
        ctx.set_deadline(in_ms(kCallMs));
        const grpc::Status status = world_.agent_stub->Register(&ctx, request, &response);
        check_status(status, "Register", &request);
        if (status.ok()) remember(agent_ids_, response.agent_id());
        break;
      }
      case 1: {
        v1::AgentHeartbeatRequest request;
        if (raw()) {
          from_raw_bytes(in_, request);
        } else {
          request.set_agent_id(agent_id());
          for (int i = in_.ConsumeIntegralInRange<int>(0, 2); i > 0; --i) {
            auto& running = *request.add_running();
            running.set_job_id(job_id());
            running.set_generation(pick_int(in_, 0, 3));
            running.add_ranks(pick_int(in_, 0, 4));
          }
          request.set_free_port(pick_int(in_, 0, 65535));
        }
        v1::AgentHeartbeatResponse response;
        ctx.set_deadline(in_ms(kCallMs));
        check_status(world_.agent_stub->Heartbeat(&ctx, request, &response), "Heartbeat", &request);
        break;
      }
      case 2: {
        v1::StreamAssignmentsRequest request;
        if (raw()) {
          from_raw_bytes(in_, request);
        } else {
          request.set_agent_id(agent_id());
        }
        ctx.set_deadline(in_ms(stream_ms()));
        auto reader = world_.agent_stub->StreamAssignments(&ctx, request);
        v1::Assignment assignment;
        for (int reads = in_.ConsumeIntegralInRange<int>(0, 6); reads > 0 && reader->Read(&assignment); --reads) {
          if (assignment.has_start()) remember(job_ids_, assignment.start().job_id());
        }
        ctx.TryCancel();
        check_status(reader->Finish(), "StreamAssignments", &request);
        break;
      }
      case 3:
      case 4: {
        v1::ReportRankExitRequest request;
        if (raw()) {
          from_raw_bytes(in_, request);
        } else {
          request.set_agent_id(agent_id());
          request.set_job_id(job_id());
          rank_exit(*request.mutable_exit());
        }
        v1::ReportRankExitResponse response;
        ctx.set_deadline(in_ms(kCallMs));
        check_status(world_.agent_stub->ReportRankExit(&ctx, request, &response), "ReportRankExit", &request);
        break;
      }
      default: {
        ctx.set_deadline(in_ms(kCallMs));
        v1::PushLogsResponse response;
        auto writer = world_.agent_stub->PushLogs(&ctx, &response);
        v1::PushLogsRequest malformed;  // the last batch that is not well-formed, if any
        bool any_malformed = false;
        for (int batches = in_.ConsumeIntegralInRange<int>(0, 3); batches > 0; --batches) {
          v1::PushLogsRequest batch;
          if (raw()) {
            from_raw_bytes(in_, batch);
          } else {
            batch.set_agent_id(agent_id());
            for (int i = in_.ConsumeIntegralInRange<int>(0, 3); i > 0; --i) {
              auto& line = *batch.add_lines();
              line.set_job_id(job_id());
              line.set_generation(pick_int(in_, 0, 3));
              line.set_rank(pick_int(in_, 0, 4));
              line.set_local_rank(pick_int(in_, 0, 3));
              line.set_node(pick_string(in_, nodes_, 8));
              line.set_stream(static_cast<v1::LogStream>(pick_int(in_, 0, 2)));
              line.set_text(in_.ConsumeRandomLengthString(48));
            }
          }
          if (!well_formed(batch)) {
            malformed = batch;
            any_malformed = true;
          }
          if (!writer->Write(batch)) break;
        }
        writer->WritesDone();
        check_status(writer->Finish(), "PushLogs", any_malformed ? &malformed : nullptr);
      }
    }
  }

  void raw_wire() {
    static const std::vector<std::string> methods = {
        "/fabric.v1.JobService/SubmitJob",          "/fabric.v1.JobService/GetJob",
        "/fabric.v1.JobService/ListJobs",           "/fabric.v1.JobService/CancelJob",
        "/fabric.v1.JobService/WatchJob",           "/fabric.v1.JobService/StreamLogs",
        "/fabric.v1.AgentService/Register",         "/fabric.v1.AgentService/Heartbeat",
        "/fabric.v1.AgentService/StreamAssignments", "/fabric.v1.AgentService/ReportRankExit",
        "/fabric.v1.AgentService/PushLogs",         "/fabric.v1.JobService/NoSuchMethod",
        "/no.such.Service/Call"};
    const std::string& method = methods[in_.ConsumeIntegralInRange<std::size_t>(0, methods.size() - 1)];
    const std::string bytes = in_.ConsumeRandomLengthString(256);
    (void)raw_call(*world_.generic, method, bytes, in_.ConsumeIntegralInRange<int>(1, 20),
                   {{"authorization", "Bearer " + kTokens[0]}});
  }
};

}  // namespace fabric::fuzz
