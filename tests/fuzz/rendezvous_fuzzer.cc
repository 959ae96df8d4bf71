// libFuzzer harness over RendezvousServiceImpl (launcher/rendezvous): every handler, the
// job-secret check on real metadata, and the supervisor's API between the calls.
//
// One grpc::Server, started on the first input and never stopped, serves the service; the
// harness calls it through an in-process channel, so requests are serialized, carried with
// their metadata and parsed as from a rank. Each input starts the job (world size, timeouts
// and generation chosen by the input), decodes into up to 48 steps — a call whose request is
// built field by field or parsed from raw bytes, a call of raw bytes on the wire, a blocking
// call left running in the background, begin_generation, request_stop, a restart of the
// job, the read-back API — and ends the job, so nothing survives into the next input.
// Blocking calls (Get, Wait, Barrier) carry deadlines of a few milliseconds.
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "fabric/v1/rendezvous.grpc.pb.h"
#include "fuzz_support.h"
#include "rendezvous/rendezvous_service.h"
#include "security/secrets.h"

namespace {

namespace v1 = fabric::v1;
using fabric::fuzz::check_status;
using fabric::fuzz::in_ms;
using fabric::fuzz::pick_int;
using fabric::fuzz::pick_int64;
using fabric::fuzz::pick_string;
using fabric::launcher::RendezvousJobOptions;
using fabric::launcher::RendezvousLimits;
using fabric::launcher::RendezvousServiceImpl;

const std::string kJob = "fuzz-job";
const std::string kOtherJob = "other-job";  // served beside it, with a secret of its own
const std::string kSecret = "fuzz-secret-0123456789";
const std::string kOtherSecret = "other-secret-0123456789";
// Small, so that the input reaches RESOURCE_EXHAUSTED.
constexpr RendezvousLimits kLimits{.max_keys_per_job = 64, .max_bytes_per_job = 64 << 10};

struct World {
  // await_unstarted 1 ms: the agent's "wait for a job or generation not begun yet" path,
  // without making every refused call slow.
  RendezvousServiceImpl service{std::chrono::milliseconds(1), kLimits};
  std::unique_ptr<grpc::Server> server;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::RendezvousService::Stub> stub;
  std::unique_ptr<grpc::GenericStub> generic;

  World() {
    fabric::fuzz::quiet_protobuf();
    grpc::ServerBuilder builder;
    builder.RegisterService(&service);
    server = builder.BuildAndStart();
    channel = server->InProcessChannel(grpc::ChannelArguments());
    stub = v1::RendezvousService::NewStub(channel);
    generic = std::make_unique<grpc::GenericStub>(channel);
  }
};

World& world() {
  static World* w = new World();  // never destroyed: the server outlives every input
  return *w;
}

// Calls left running in the background; the input waits for all of them before it ends.
class Pending {
 public:
  void start() {
    std::lock_guard lock(mutex_);
    ++count_;
  }
  void done(const grpc::Status& status, const char* method, const google::protobuf::Message* request) {
    check_status(status, method, request);
    std::lock_guard lock(mutex_);
    --count_;
    changed_.notify_all();
  }
  void wait() {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return count_ == 0; });
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  int count_ = 0;
};

// One input's view of the job it drives.
struct Input {
  FuzzedDataProvider& in;
  std::int32_t world_size;
  std::int32_t generation;
  std::vector<std::string> keys{"a", "b", "/pg/0/addr", "counter", ""};

  std::string key() {
    std::string k = pick_string(in, keys, 16);
    if (keys.size() < 16 && !k.empty()) keys.push_back(k);
    return k;
  }

  // A context: most often a rank of the job's current generation, so that the call gets
  // past admission; else one wrong in some way.
  void context(v1::RankContext& c) {
    if (in.ConsumeIntegralInRange<int>(0, 3) != 0) {
      c.set_job_id(kJob);
      c.set_generation(generation);
      c.set_rank(in.ConsumeIntegralInRange<std::int32_t>(0, world_size - 1));
      return;
    }
    switch (in.ConsumeIntegralInRange<int>(0, 9)) {
      case 0: return;  // no context at all
      case 1: c.set_job_id(kOtherJob); break;
      case 2: c.set_job_id(pick_string(in, {"", "missing-job"})); break;
      default: c.set_job_id(kJob);
    }
    switch (in.ConsumeIntegralInRange<int>(0, 7)) {
      case 0: c.set_generation(generation - 1); break;
      case 1: c.set_generation(generation + 1); break;
      case 2: c.set_generation(pick_int(in, 0, 3)); break;
      default: c.set_generation(generation);
    }
    c.set_rank(in.ConsumeIntegralInRange<int>(0, 5) == 0 ? pick_int(in, -1, world_size)
                                                         : in.ConsumeIntegralInRange<std::int32_t>(0, world_size - 1));
  }

  // The job secret as metadata: right (mostly), absent, another job's, garbage.
  void metadata(grpc::ClientContext& ctx) {
    switch (in.ConsumeIntegralInRange<int>(0, 15)) {
      case 0: return;
      case 1: ctx.AddMetadata(fabric::launcher::kJobSecretMetadata, kOtherSecret); return;
      case 2: {
        ctx.AddMetadata(fabric::launcher::kJobSecretMetadata, fabric::fuzz::printable(in.ConsumeRandomLengthString(40)));
        return;
      }
      case 3: ctx.AddMetadata(fabric::launcher::kJobSecretMetadata, kSecret.substr(0, kSecret.size() - 1)); return;
      default: ctx.AddMetadata(fabric::launcher::kJobSecretMetadata, kSecret);
    }
  }

  // A value: random bytes, or a decimal number for Add (valid, edge, or not quite).
  std::string value() {
    switch (in.ConsumeIntegralInRange<int>(0, 6)) {
      case 0: return std::to_string(pick_int64(in));
      case 1: return pick_string(in, {"9223372036854775807", "-9223372036854775808", "+1", " 1", "1x", "", "0"});
      case 2: return std::string(in.ConsumeIntegralInRange<std::size_t>(0, 70'000), 'v');
      default: return in.ConsumeRandomLengthString(64);
    }
  }

  bool raw() { return in.ConsumeIntegralInRange<int>(0, 7) == 0; }
};

template <typename Request>
void fill_timeout(Input& input, Request& request) {
  fabric::fuzz::maybe_duration(input.in, [&] { return request.mutable_timeout(); });
}

constexpr int kCallMs = 2000;  // non-blocking calls: generous, they answer at once
int blocking_ms(Input& input) { return input.in.ConsumeIntegralInRange<int>(1, 4); }

void run_one(Input& input, Pending& pending) {
  World& w = world();
  FuzzedDataProvider& in = input.in;
  grpc::ClientContext ctx;
  input.metadata(ctx);
  const int op = in.ConsumeIntegralInRange<int>(0, 21);
  switch (op) {
    case 0: {
      v1::SetRequest request;
      if (input.raw()) {
        fabric::fuzz::from_raw_bytes(in, request);
      } else {
        input.context(*request.mutable_context());
        request.set_key(input.key());
        request.set_value(input.value());
      }
      v1::SetResponse response;
      ctx.set_deadline(in_ms(kCallMs));
      check_status(w.stub->Set(&ctx, request, &response), "Set", &request);
      break;
    }
    case 1: {
      v1::GetRequest request;
      if (input.raw()) {
        fabric::fuzz::from_raw_bytes(in, request);
      } else {
        input.context(*request.mutable_context());
        request.set_key(input.key());
        fill_timeout(input, request);
      }
      v1::GetResponse response;
      ctx.set_deadline(in_ms(blocking_ms(input)));
      check_status(w.stub->Get(&ctx, request, &response), "Get", &request);
      break;
    }
    case 2: {
      v1::AddRequest request;
      if (input.raw()) {
        fabric::fuzz::from_raw_bytes(in, request);
      } else {
        input.context(*request.mutable_context());
        request.set_key(input.key());
        request.set_amount(pick_int64(in));
      }
      v1::AddResponse response;
      ctx.set_deadline(in_ms(kCallMs));
      check_status(w.stub->Add(&ctx, request, &response), "Add", &request);
      break;
    }
    case 3: {
      v1::CompareSetRequest request;
      if (input.raw()) {
        fabric::fuzz::from_raw_bytes(in, request);
      } else {
        input.context(*request.mutable_context());
        request.set_key(input.key());
        request.set_expected_value(input.value());
        request.set_desired_value(input.value());
      }
      v1::CompareSetResponse response;
      ctx.set_deadline(in_ms(kCallMs));
      check_status(w.stub->CompareSet(&ctx, request, &response), "CompareSet", &request);
      break;
    }
    case 4: {
      v1::WaitRequest request;
      if (input.raw()) {
        fabric::fuzz::from_raw_bytes(in, request);
      } else {
        input.context(*request.mutable_context());
        const int n = in.ConsumeIntegralInRange<int>(0, 4);
        for (int i = 0; i < n; ++i) request.add_keys(input.key());
        fill_timeout(input, request);
      }
      v1::WaitResponse response;
      ctx.set_deadline(in_ms(blocking_ms(input)));
      check_status(w.stub->Wait(&ctx, request, &response), "Wait", &request);
      break;
    }
    case 5: {
      v1::CheckRequest request;
      if (input.raw()) {
        fabric::fuzz::from_raw_bytes(in, request);
      } else {
        input.context(*request.mutable_context());
        const int n = in.ConsumeIntegralInRange<int>(0, 4);
        for (int i = 0; i < n; ++i) request.add_keys(input.key());
      }
      v1::CheckResponse response;
      ctx.set_deadline(in_ms(kCallMs));
      check_status(w.stub->Check(&ctx, request, &response), "Check", &request);
      break;
    }
    case 6: {
      v1::DeleteKeyRequest request;
      if (input.raw()) {
        fabric::fuzz::from_raw_bytes(in, request);
      } else {
        input.context(*request.mutable_context());
        request.set_key(input.key());
      }
      v1::DeleteKeyResponse response;
      ctx.set_deadline(in_ms(kCallMs));
      check_status(w.stub->DeleteKey(&ctx, request, &response), "DeleteKey", &request);
      break;
    }
    case 7: {
      v1::NumKeysRequest request;
      if (input.raw()) {
        fabric::fuzz::from_raw_bytes(in, request);
      } else {
        input.context(*request.mutable_context());
      }
      v1::NumKeysResponse response;
      ctx.set_deadline(in_ms(kCallMs));
      const grpc::Status status = w.stub->NumKeys(&ctx, request, &response);
      check_status(status, "NumKeys", &request);
      if (status.ok() && (response.num_keys() < 0 ||
                          static_cast<std::size_t>(response.num_keys()) > kLimits.max_keys_per_job)) {
        std::fprintf(stderr, "fuzz: NumKeys answered %lld, beyond the limit\n",
                     static_cast<long long>(response.num_keys()));
        std::abort();
      }
      break;
    }
    case 8: {
      v1::BarrierRequest request;
      if (input.raw()) {
        fabric::fuzz::from_raw_bytes(in, request);
      } else {
        input.context(*request.mutable_context());
        request.set_name(pick_string(in, {"b", "epoch_end", ""}, 16));
        request.set_sequence(in.ConsumeIntegralInRange<int>(0, 3) == 0 ? pick_int64(in)
                                                                        : in.ConsumeIntegralInRange<std::int64_t>(0, 2));
        request.set_world_size(pick_int(in, 0, input.world_size + 1));
        fill_timeout(input, request);
      }
      v1::BarrierResponse response;
      ctx.set_deadline(in_ms(blocking_ms(input)));
      check_status(w.stub->Barrier(&ctx, request, &response), "Barrier", &request);
      break;
    }
    case 9: {
      v1::RankHeartbeatRequest request;
      if (input.raw()) {
        fabric::fuzz::from_raw_bytes(in, request);
      } else {
        input.context(*request.mutable_context());
        if (in.ConsumeBool()) request.set_step(pick_int64(in));
        if (in.ConsumeBool()) request.set_epoch(pick_int64(in));
        request.set_phase(pick_string(in, {"train", "setup", ""}, 16));
        fabric::fuzz::maybe_duration(in, [&] { return request.mutable_since_progress(); });
      }
      v1::RankHeartbeatResponse response;
      ctx.set_deadline(in_ms(kCallMs));
      check_status(w.stub->Heartbeat(&ctx, request, &response), "Heartbeat", &request);
      break;
    }
    case 10: {
      v1::ReportErrorRequest request;
      if (input.raw()) {
        fabric::fuzz::from_raw_bytes(in, request);
      } else {
        input.context(*request.mutable_context());
        if (in.ConsumeBool()) {
          auto& error = *request.mutable_error();
          error.set_message(pick_string(in, {"boom"}, 64));
          error.set_error_type(pick_string(in, {"std::runtime_error"}, 16));
          error.set_stack_trace(fabric::fuzz::random_text(in, 64));
          if (in.ConsumeBool()) error.set_step(pick_int64(in));
        }
      }
      v1::ReportErrorResponse response;
      ctx.set_deadline(in_ms(kCallMs));
      check_status(w.stub->ReportError(&ctx, request, &response), "ReportError", &request);
      break;
    }
    case 11: {  // a blocking call left running, for a later step to satisfy or abort
      auto call = std::make_shared<std::pair<grpc::ClientContext, v1::GetRequest>>();
      input.metadata(call->first);
      call->first.set_deadline(in_ms(in.ConsumeIntegralInRange<int>(1, 15)));
      const int which = in.ConsumeIntegralInRange<int>(0, 2);
      pending.start();
      if (which == 0) {
        input.context(*call->second.mutable_context());
        call->second.set_key(input.key());
        fill_timeout(input, call->second);
        auto response = std::make_shared<v1::GetResponse>();
        w.stub->async()->Get(&call->first, &call->second, response.get(),
                             [&pending, call, response](grpc::Status s) { pending.done(s, "Get (async)", &call->second); });
      } else if (which == 1) {
        auto request = std::make_shared<v1::WaitRequest>();
        input.context(*request->mutable_context());
        request->add_keys(input.key());
        if (in.ConsumeBool()) request->add_keys(input.key());
        fill_timeout(input, *request);
        auto response = std::make_shared<v1::WaitResponse>();
        w.stub->async()->Wait(&call->first, request.get(), response.get(),
                              [&pending, call, request, response](grpc::Status s) { pending.done(s, "Wait (async)", request.get()); });
      } else {
        auto request = std::make_shared<v1::BarrierRequest>();
        input.context(*request->mutable_context());
        request->set_name("b");
        request->set_world_size(in.ConsumeIntegralInRange<std::int32_t>(0, input.world_size));
        fill_timeout(input, *request);
        auto response = std::make_shared<v1::BarrierResponse>();
        w.stub->async()->Barrier(&call->first, request.get(), response.get(),
                                 [&pending, call, request, response](grpc::Status s) {
                                   pending.done(s, "Barrier (async)", request.get());
                                 });
      }
      break;
    }
    case 12: {  // bytes on the wire: any method, or one that does not exist
      static const std::vector<std::string> methods = {
          "Set", "Get", "Add", "CompareSet", "Wait", "Check", "DeleteKey", "NumKeys", "Barrier", "Heartbeat",
          "ReportError", "NoSuchMethod"};
      const std::string method =
          "/fabric.v1.RendezvousService/" + methods[in.ConsumeIntegralInRange<std::size_t>(0, methods.size() - 1)];
      const std::string bytes = in.ConsumeRandomLengthString(256);
      (void)fabric::fuzz::raw_call(*w.generic, method, bytes, 10,
                                   {{fabric::launcher::kJobSecretMetadata, kSecret}});
      break;
    }
    case 13: {  // the supervisor restarts the job: a new generation
      const std::int32_t next = input.generation + in.ConsumeIntegralInRange<std::int32_t>(-1, 3);
      try {
        w.service.begin_generation(kJob, next);
        input.generation = next;
      } catch (const std::invalid_argument&) {
        if (next > input.generation) std::abort();  // a greater generation must be accepted
      }
      break;
    }
    case 14:
      // The reason is the supervisor's own text (UTF-8: it goes out in a string field).
      (void)w.service.request_stop(in.ConsumeBool() ? kJob : kOtherJob, fabric::fuzz::printable(in.ConsumeRandomLengthString(32)));
      break;
    case 15: {  // the job ends and is started again, maybe with another world size
      (void)w.service.end_job(kJob);
      input.world_size = in.ConsumeIntegralInRange<std::int32_t>(1, 8);
      input.generation = in.ConsumeIntegralInRange<std::int32_t>(0, 3);
      w.service.start_job(kJob, input.world_size,
                          {.rdzv_timeout = std::chrono::milliseconds(in.ConsumeIntegralInRange<int>(0, 5)),
                           .generation = input.generation,
                           .secret = kSecret});
      break;
    }
    case 16: {  // what the supervisor reads between calls
      (void)w.service.generation(kJob);
      (void)w.service.heartbeats(kJob);
      (void)w.service.reported_errors(kJob);
      (void)w.service.joined_ranks(kJob);
      (void)w.service.last_heartbeat(kJob, pick_int(in, 0, input.world_size));
      break;
    }
    default: {  // the commonest: a store write and read, the calls ranks make most
      v1::SetRequest set;
      input.context(*set.mutable_context());
      set.set_key(input.key());
      set.set_value(input.value());
      v1::SetResponse set_response;
      ctx.set_deadline(in_ms(kCallMs));
      const grpc::Status status = w.stub->Set(&ctx, set, &set_response);
      check_status(status, "Set", &set);
      if (!status.ok()) break;
      grpc::ClientContext get_ctx;
      get_ctx.AddMetadata(fabric::launcher::kJobSecretMetadata, kSecret);
      get_ctx.set_deadline(in_ms(kCallMs));
      v1::GetRequest get;
      *get.mutable_context() = set.context();
      get.set_key(set.key());
      v1::GetResponse get_response;
      const grpc::Status got = w.stub->Get(&get_ctx, get, &get_response);
      check_status(got, "Get", &get);
      if (got.ok() && get_response.value() != set.value()) {
        std::fprintf(stderr, "fuzz: Get after Set answered another value\n");
        std::abort();
      }
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  World& w = world();
  FuzzedDataProvider in(data, size);
  Input input{.in = in,
              .world_size = in.ConsumeIntegralInRange<std::int32_t>(1, 8),
              .generation = in.ConsumeIntegralInRange<std::int32_t>(0, 3)};
  const auto rdzv_timeout = std::chrono::milliseconds(in.ConsumeIntegralInRange<int>(0, 5));
  const auto heartbeat_interval = std::chrono::milliseconds(in.ConsumeIntegralInRange<std::int64_t>(0, 1'000'000'000));
  w.service.start_job(kJob, input.world_size,
                      {.rdzv_timeout = rdzv_timeout,
                       .heartbeat_interval = heartbeat_interval,
                       .generation = input.generation,
                       .secret = kSecret});
  w.service.start_job(kOtherJob, 1, {.secret = kOtherSecret});
  Pending pending;
  for (int step = 0; step < 48 && in.remaining_bytes() > 0; ++step) run_one(input, pending);
  // Ending the jobs aborts whatever still waits; then nothing of this input is left.
  (void)w.service.end_job(kJob);
  (void)w.service.end_job(kOtherJob);
  pending.wait();
  return 0;
}
