// The wire contracts in proto/fabric/v1: messages survive serialization with the values
// the launcher relies on (binary store values, non-UTF-8 log bytes, oneofs, maps,
// durations), and the services expose exactly the RPCs the design names. A failure here
// means a .proto edit changed the wire contract; make sure that was meant.

#include <google/protobuf/descriptor.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "fabric/v1/agent.grpc.pb.h"
#include "fabric/v1/job.grpc.pb.h"
#include "fabric/v1/rendezvous.grpc.pb.h"

namespace {

namespace pb = google::protobuf;
namespace v1 = fabric::v1;
using namespace std::string_literals;

template <typename Message>
Message round_trip(const Message& in) {
  std::string wire;
  EXPECT_TRUE(in.SerializeToString(&wire));
  Message out;
  EXPECT_TRUE(out.ParseFromString(wire));
  return out;
}

const pb::ServiceDescriptor& service(const std::string& full_name) {
  const pb::ServiceDescriptor* found =
      pb::DescriptorPool::generated_pool()->FindServiceByName(full_name);
  if (found == nullptr) {
    throw std::runtime_error("no service " + full_name + " in the generated pool");
  }
  return *found;
}

std::set<std::string> method_names(const pb::ServiceDescriptor& s) {
  std::set<std::string> names;
  for (int i = 0; i < s.method_count(); ++i) names.insert(s.method(i)->name());
  return names;
}

TEST(WireContract, StoreValue_KeepsArbitraryBytes) {
  const std::string value = "\0\xff\x01not utf-8\xc3"s;
  v1::SetRequest in;
  in.mutable_context()->set_job_id("job-7");
  in.mutable_context()->set_generation(2);
  in.mutable_context()->set_rank(3);
  in.set_key("/pg/0/addr");
  in.set_value(value);

  const v1::SetRequest out = round_trip(in);

  EXPECT_EQ(out.context().job_id(), "job-7");
  EXPECT_EQ(out.context().generation(), 2);
  EXPECT_EQ(out.context().rank(), 3);
  EXPECT_EQ(out.key(), "/pg/0/addr");
  EXPECT_EQ(out.value(), value);
}

TEST(WireContract, WaitRequest_KeepsKeysAndTimeout) {
  v1::WaitRequest in;
  in.mutable_context()->set_job_id("job-7");
  in.add_keys("a");
  in.add_keys("b");
  in.mutable_timeout()->set_seconds(1800);

  const v1::WaitRequest out = round_trip(in);

  EXPECT_EQ(std::vector<std::string>(out.keys().begin(), out.keys().end()),
            (std::vector<std::string>{"a", "b"}));
  ASSERT_TRUE(out.has_timeout());
  EXPECT_EQ(out.timeout().seconds(), 1800);
}

TEST(WireContract, HeartbeatStep_DistinguishesUnsetFromZero) {
  v1::RankHeartbeatRequest before_loop;
  EXPECT_FALSE(round_trip(before_loop).has_step());

  v1::RankHeartbeatRequest first_step;
  first_step.set_step(0);
  const v1::RankHeartbeatRequest out = round_trip(first_step);
  EXPECT_TRUE(out.has_step());
  EXPECT_EQ(out.step(), 0);
}

TEST(WireContract, JobSpec_KeepsEnvDurationsAndLogOptions) {
  v1::JobSpec in;
  in.set_program("./train");
  in.add_args("--epochs");
  in.add_args("3");
  (*in.mutable_env())["NCCL_DEBUG"] = "INFO";
  in.set_nproc_per_node(4);
  in.set_num_nodes(2);
  in.set_max_restarts(3);
  in.mutable_heartbeat_timeout()->set_seconds(60);
  in.mutable_rdzv_timeout()->set_seconds(900);
  in.set_working_dir("/srv/run");
  in.mutable_log()->set_dir("logs");
  in.mutable_log()->set_tee(v1::STREAMS_STDERR);
  in.set_min_nodes(1);

  const v1::JobSpec out = round_trip(in);

  EXPECT_EQ(out.program(), "./train");
  ASSERT_EQ(out.args_size(), 2);
  EXPECT_EQ(out.args(1), "3");
  EXPECT_EQ(out.env().at("NCCL_DEBUG"), "INFO");
  EXPECT_EQ(out.nproc_per_node(), 4);
  EXPECT_EQ(out.num_nodes(), 2);
  EXPECT_EQ(out.max_restarts(), 3);
  EXPECT_EQ(out.heartbeat_timeout().seconds(), 60);
  EXPECT_EQ(out.rdzv_timeout().seconds(), 900);
  EXPECT_EQ(out.working_dir(), "/srv/run");
  EXPECT_EQ(out.log().dir(), "logs");
  EXPECT_EQ(out.log().tee(), v1::STREAMS_STDERR);
  EXPECT_EQ(out.min_nodes(), 1);
}

TEST(WireContract, FailureSummary_KeepsSignalStderrTailAndReportedError) {
  v1::Job in;
  in.set_job_id("job-7");
  in.set_state(v1::JOB_STATE_FAILED);
  in.set_restart_count(3);
  v1::FailureSummary& failure = *in.mutable_failure();
  failure.set_generation(3);
  failure.set_node("node-b");
  v1::RankExit& exit = *failure.mutable_first_failure();
  exit.set_rank(5);
  exit.set_cause(v1::RankExit::CAUSE_SIGNALED);
  exit.set_signal(9);
  exit.add_stderr_tail("progress \xe2\x96\x88\xff"s);
  exit.mutable_reported_error()->set_message("CUDA out of memory");
  exit.mutable_reported_error()->set_error_type("c10::OutOfMemoryError");

  const v1::Job out = round_trip(in);

  EXPECT_EQ(out.state(), v1::JOB_STATE_FAILED);
  EXPECT_EQ(out.restart_count(), 3);
  const v1::RankExit& got = out.failure().first_failure();
  EXPECT_EQ(got.rank(), 5);
  EXPECT_EQ(got.cause(), v1::RankExit::CAUSE_SIGNALED);
  EXPECT_EQ(got.status_case(), v1::RankExit::kSignal);
  EXPECT_EQ(got.signal(), 9);
  ASSERT_EQ(got.stderr_tail_size(), 1);
  EXPECT_EQ(got.stderr_tail(0), exit.stderr_tail(0));
  EXPECT_EQ(got.reported_error().error_type(), "c10::OutOfMemoryError");
  EXPECT_FALSE(got.reported_error().has_step());
}

TEST(WireContract, Assignment_KeepsWhichActionItCarries) {
  v1::Assignment start;
  v1::StartRanks& ranks = *start.mutable_start();
  ranks.set_job_id("job-7");
  ranks.set_generation(1);
  ranks.add_ranks(4);
  ranks.add_ranks(5);
  (*ranks.mutable_env())["FABRICD_RESTART_COUNT"] = "1";

  const v1::Assignment got_start = round_trip(start);
  ASSERT_EQ(got_start.action_case(), v1::Assignment::kStart);
  EXPECT_EQ(got_start.start().ranks_size(), 2);
  EXPECT_EQ(got_start.start().env().at("FABRICD_RESTART_COUNT"), "1");

  v1::Assignment stop;
  stop.mutable_stop()->set_job_id("job-7");
  stop.mutable_stop()->set_reason(v1::StopJob::REASON_RESTART);

  const v1::Assignment got_stop = round_trip(stop);
  ASSERT_EQ(got_stop.action_case(), v1::Assignment::kStop);
  EXPECT_EQ(got_stop.stop().reason(), v1::StopJob::REASON_RESTART);
}

TEST(WireContract, RendezvousService_ExposesTheC10dStoreVerbs) {
  EXPECT_STREQ(v1::RendezvousService::service_full_name(), "fabric.v1.RendezvousService");
  const pb::ServiceDescriptor& s = service(v1::RendezvousService::service_full_name());
  EXPECT_EQ(method_names(s),
            (std::set<std::string>{"Set", "Get", "Add", "CompareSet", "Wait", "Check",
                                   "DeleteKey", "NumKeys", "Barrier", "Heartbeat",
                                   "ReportError"}));
  // The file descriptor route, as tools that load the .proto files see it.
  const pb::FileDescriptor* file = v1::SetRequest::descriptor()->file();
  ASSERT_NE(file->FindServiceByName("RendezvousService"), nullptr);
  EXPECT_NE(file->FindServiceByName("RendezvousService")->FindMethodByName("CompareSet"),
            nullptr);
}

TEST(WireContract, RendezvousRequests_AllCarryTheRankContext) {
  // The contract that lets the server refuse a stale generation: no request without it.
  const pb::ServiceDescriptor& s = service(v1::RendezvousService::service_full_name());
  for (int i = 0; i < s.method_count(); ++i) {
    const pb::Descriptor* request = s.method(i)->input_type();
    const pb::FieldDescriptor* context = request->FindFieldByName("context");
    ASSERT_NE(context, nullptr) << request->full_name() << " has no context field";
    EXPECT_EQ(context->number(), 1) << request->full_name();
    EXPECT_EQ(context->message_type(), v1::RankContext::descriptor()) << request->full_name();
  }
}

TEST(WireContract, JobService_StreamsStateChangesAndLogs) {
  EXPECT_STREQ(v1::JobService::service_full_name(), "fabric.v1.JobService");
  const pb::ServiceDescriptor& s = service(v1::JobService::service_full_name());
  EXPECT_EQ(method_names(s), (std::set<std::string>{"SubmitJob", "GetJob", "ListJobs",
                                                    "CancelJob", "WatchJob", "StreamLogs"}));
  EXPECT_TRUE(s.FindMethodByName("WatchJob")->server_streaming());
  EXPECT_TRUE(s.FindMethodByName("StreamLogs")->server_streaming());
  EXPECT_FALSE(s.FindMethodByName("SubmitJob")->server_streaming());
}

TEST(WireContract, AgentService_StreamsAssignmentsToTheAgent) {
  EXPECT_STREQ(v1::AgentService::service_full_name(), "fabric.v1.AgentService");
  const pb::ServiceDescriptor& s = service(v1::AgentService::service_full_name());
  EXPECT_EQ(method_names(s),
            (std::set<std::string>{"Register", "Heartbeat", "StreamAssignments",
                                   "ReportRankExit", "PushLogs"}));
  EXPECT_TRUE(s.FindMethodByName("StreamAssignments")->server_streaming());
  EXPECT_FALSE(s.FindMethodByName("StreamAssignments")->client_streaming());
  EXPECT_TRUE(s.FindMethodByName("PushLogs")->client_streaming());
}

TEST(WireContract, Fields_AreSnakeCase) {
  const pb::FileDescriptor* files[] = {v1::Job::descriptor()->file(),
                                       v1::RankContext::descriptor()->file(),
                                       v1::Assignment::descriptor()->file()};
  const auto snake = [](const std::string& name) {
    return std::all_of(name.begin(), name.end(), [](char c) {
      return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
    });
  };
  for (const pb::FileDescriptor* file : files) {
    for (int m = 0; m < file->message_type_count(); ++m) {
      const pb::Descriptor* message = file->message_type(m);
      for (int f = 0; f < message->field_count(); ++f) {
        EXPECT_TRUE(snake(message->field(f)->name())) << message->field(f)->full_name();
      }
    }
  }
}

}  // namespace
