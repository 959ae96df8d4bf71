// bench_agent_swarm: many simulated fabricd agents in one process, a load generator for a
// coordinator (bench/cluster, case coordinator-N-agents). Each simulated agent does what a
// real idle agent does (launcher/agent/agent.cc): Register, keep its StreamAssignments
// stream open, keep a PushLogs stream open (with nothing to push), and Heartbeat every
// RegisterResponse.heartbeat_interval with a deadline of twice that. It runs no ranks.
//
// Everything is asynchronous (gRPC's callback API), so a thousand agents need a handful of
// threads. Each agent has its own channel, hence its own TCP connection, as separate nodes
// would. The load is bounded: it stops by itself after --warmup-seconds + --window-seconds
// + --tail-seconds of heartbeating, cancels its streams and exits.
//
// Output (stdout):
//   ready <system-clock ms>        every agent registered and its streams are open
//   {"agents": ..., ...}           one JSON summary at the end (see print_summary)
// Heartbeat latencies are counted for calls issued inside the window
// [ready + warmup, ready + warmup + window], the span the caller measures the coordinator.
// Exit status: 0, or 1 when an agent could not register or open its streams.
// --no-push-logs / --no-assignments leave those streams out, to see what each costs the
// coordinator (bench/README.md); the bench never passes them.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "fabric/v1/agent.grpc.pb.h"

namespace {

namespace v1 = fabric::v1;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

long long now_ms() {
  return std::chrono::duration_cast<milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

struct Options {
  std::string coordinator = "127.0.0.1:7070";
  int agents = 1000;
  double warmup_seconds = 2, window_seconds = 30, tail_seconds = 1;
  int register_in_flight = 32;  // concurrent Register calls while the swarm starts
  bool push_logs = true, assignments = true;  // --no-push-logs, --no-assignments: diagnosis only
};

// What every callback reports into; one mutex, taken briefly.
struct Tally {
  std::mutex mutex;
  std::condition_variable changed;
  std::vector<double> latencies_ms;  // heartbeats issued inside the window that succeeded
  std::map<std::string, int> failures;  // "Heartbeat NOT_FOUND: ..." -> count, whole run
  long long heartbeats_ok = 0, heartbeats_in_window = 0, heartbeats_failed_in_window = 0;
  int registered = 0, register_pending = 0, streams_started = 0, streams_done = 0;
  int streams_ended_early = 0, assignments_received = 0;
  bool stopping = false;

  void fail(const std::string& what, const grpc::Status& status) {
    std::lock_guard lock(mutex);
    ++failures[what + " " + std::to_string(status.error_code()) + ": " + status.error_message().substr(0, 160)];
  }
};

// The agent's assignment stream: reads until cancelled.
class AssignmentReader final : public grpc::ClientReadReactor<v1::Assignment> {
 public:
  explicit AssignmentReader(Tally& tally) : tally_(tally) {}
  void start(v1::AgentService::Stub& stub, const std::string& agent_id);
  void OnReadDone(bool ok) override {
    if (!ok) return;  // OnDone follows
    {
      std::lock_guard lock(tally_.mutex);
      ++tally_.assignments_received;
    }
    StartRead(&assignment_);
  }
  void OnDone(const grpc::Status& status) override {
    {
      std::lock_guard lock(tally_.mutex);
      ++tally_.streams_done;
      if (!tally_.stopping) {
        ++tally_.streams_ended_early;
        ++tally_.failures["StreamAssignments ended " + std::to_string(status.error_code()) + ": " +
                          status.error_message().substr(0, 160)];
      }
    }
    tally_.changed.notify_all();
  }
  grpc::ClientContext context;

 private:
  Tally& tally_;
  v1::StreamAssignmentsRequest request_;
  v1::Assignment assignment_;
};

// The agent's log stream: opened, never written, cancelled at the end.
class LogWriter final : public grpc::ClientWriteReactor<v1::PushLogsRequest> {
 public:
  explicit LogWriter(Tally& tally) : tally_(tally) {}
  void start(v1::AgentService::Stub& stub) {
    stub.async()->PushLogs(&context, &response_, this);
    StartCall();
  }
  void OnDone(const grpc::Status& status) override {
    {
      std::lock_guard lock(tally_.mutex);
      ++tally_.streams_done;
      if (!tally_.stopping) {
        ++tally_.streams_ended_early;
        ++tally_.failures["PushLogs ended " + std::to_string(status.error_code()) + ": " +
                          status.error_message().substr(0, 160)];
      }
    }
    tally_.changed.notify_all();
  }
  grpc::ClientContext context;

 private:
  Tally& tally_;
  v1::PushLogsResponse response_;
};

struct Agent {
  int index = 0;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::AgentService::Stub> stub;
  std::string agent_id;
  milliseconds interval{1000};
  std::unique_ptr<AssignmentReader> reader;
  std::unique_ptr<LogWriter> log_writer;
};

void AssignmentReader::start(v1::AgentService::Stub& stub, const std::string& agent_id) {
  request_.set_agent_id(agent_id);
  stub.async()->StreamAssignments(&context, &request_, this);
  StartRead(&assignment_);
  StartCall();
}

// One heartbeat in flight.
struct HeartbeatCall {
  grpc::ClientContext context;
  v1::AgentHeartbeatRequest request;
  v1::AgentHeartbeatResponse response;
  Clock::time_point sent;
  bool in_window = false;
};

std::string node_name(int index) {
  char name[32];
  std::snprintf(name, sizeof(name), "sim-%05d", index);
  return name;
}

void print_summary(const Options& options, Tally& tally, double register_seconds) {
  std::lock_guard lock(tally.mutex);
  std::vector<double>& l = tally.latencies_ms;
  std::sort(l.begin(), l.end());
  const auto pick = [&](double q) {
    return l.empty() ? -1.0 : l[std::min(l.size() - 1, static_cast<std::size_t>(q * static_cast<double>(l.size())))];
  };
  std::printf(
      "{\"agents\": %d, \"registered\": %d, \"streams_started\": %d, \"register_seconds\": %.3f, "
      "\"heartbeats_ok\": %lld, \"window_heartbeats\": %lld, \"window_failed\": %lld, "
      "\"streams_ended_early\": %d, \"assignments_received\": %d, "
      "\"p50_ms\": %.3f, \"p90_ms\": %.3f, \"p99_ms\": %.3f, \"max_ms\": %.3f, \"failures\": {",
      options.agents, tally.registered, tally.streams_started, register_seconds, tally.heartbeats_ok,
      tally.heartbeats_in_window, tally.heartbeats_failed_in_window, tally.streams_ended_early,
      tally.assignments_received, pick(0.5), pick(0.9), pick(0.99), l.empty() ? -1.0 : l.back());
  bool first = true;
  for (const auto& [what, count] : tally.failures) {
    std::string escaped;
    for (const char c : what) {
      if (c == '"' || c == '\\') escaped += '\\';
      if (static_cast<unsigned char>(c) >= 0x20) escaped += c;
    }
    std::printf("%s\"%s\": %d", first ? "" : ", ", escaped.c_str(), count);
    first = false;
  }
  std::printf("}}\n");
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    const auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::cerr << "agent_swarm: " << flag << " needs a value" << std::endl;
        std::exit(2);
      }
      return argv[++i];
    };
    if (flag == "--coordinator") options.coordinator = value();
    else if (flag == "--agents") options.agents = std::stoi(value());
    else if (flag == "--warmup-seconds") options.warmup_seconds = std::stod(value());
    else if (flag == "--window-seconds") options.window_seconds = std::stod(value());
    else if (flag == "--tail-seconds") options.tail_seconds = std::stod(value());
    else if (flag == "--register-in-flight") options.register_in_flight = std::max(1, std::stoi(value()));
    else if (flag == "--no-push-logs") options.push_logs = false;
    else if (flag == "--no-assignments") options.assignments = false;
    else {
      std::cerr << "agent_swarm: unknown flag " << flag << std::endl;
      return 2;
    }
  }
  if (options.agents < 1 || options.agents > 100000 || options.window_seconds <= 0 || options.window_seconds > 3600) {
    std::cerr << "agent_swarm: --agents must be 1..100000 and --window-seconds 0..3600" << std::endl;
    return 2;
  }

  Tally tally;
  std::vector<Agent> agents(static_cast<std::size_t>(options.agents));
  for (int i = 0; i < options.agents; ++i) {
    Agent& agent = agents[static_cast<std::size_t>(i)];
    agent.index = i;
    grpc::ChannelArguments args;
    // A channel of its own and a connection of its own: channels with equal arguments would
    // otherwise share one subchannel (one TCP connection) from the global pool.
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    agent.channel = grpc::CreateCustomChannel(options.coordinator, grpc::InsecureChannelCredentials(), args);
    agent.stub = v1::AgentService::NewStub(agent.channel);
  }

  // Register everyone, at most register_in_flight at once, then open the streams.
  const auto register_start = Clock::now();
  struct RegisterCall {
    grpc::ClientContext context;
    v1::RegisterRequest request;
    v1::RegisterResponse response;
  };
  for (Agent& agent : agents) {
    {
      std::unique_lock lock(tally.mutex);
      tally.changed.wait(lock, [&] { return tally.register_pending < options.register_in_flight; });
      ++tally.register_pending;
    }
    auto call = std::make_shared<RegisterCall>();
    call->request.set_node_name(node_name(agent.index));
    // Where its RendezvousService would be: nobody dials it, no job is ever placed.
    call->request.set_address("127.0.0.1:" + std::to_string(20000 + agent.index % 40000));
    call->request.set_slots(8);
    call->request.set_agent_version("fabric.v1");
    call->request.set_free_port(30000 + agent.index % 30000);
    call->context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    call->context.set_wait_for_ready(true);
    agent.stub->async()->Register(&call->context, &call->request, &call->response,
                                  [&tally, &agent, call](grpc::Status status) {
                                    if (status.ok()) {
                                      agent.agent_id = call->response.agent_id();
                                      const auto& interval = call->response.heartbeat_interval();
                                      agent.interval = std::max(
                                          milliseconds(interval.seconds() * 1000 + interval.nanos() / 1000000),
                                          milliseconds(10));
                                    } else {
                                      tally.fail("Register", status);
                                    }
                                    std::lock_guard lock(tally.mutex);
                                    --tally.register_pending;
                                    if (status.ok()) ++tally.registered;
                                    tally.changed.notify_all();
                                  });
  }
  {
    std::unique_lock lock(tally.mutex);
    tally.changed.wait(lock, [&] { return tally.register_pending == 0; });
  }
  const double register_seconds = std::chrono::duration<double>(Clock::now() - register_start).count();
  const int streams_per_agent = (options.push_logs ? 1 : 0) + (options.assignments ? 1 : 0);
  int streams_started = 0;
  for (Agent& agent : agents) {
    if (agent.agent_id.empty()) continue;
    if (options.assignments) {
      agent.reader = std::make_unique<AssignmentReader>(tally);
      agent.reader->start(*agent.stub, agent.agent_id);
      ++streams_started;
    }
    if (options.push_logs) {
      agent.log_writer = std::make_unique<LogWriter>(tally);
      agent.log_writer->start(*agent.stub);
      ++streams_started;
    }
  }
  {
    // The coordinator sends no headers on a stream until it has an assignment, so the
    // client cannot see a stream's handler start: the warm-up gives them time.
    std::lock_guard lock(tally.mutex);
    tally.streams_started = streams_started;
  }
  const bool all_up = tally.registered == options.agents;
  std::printf("ready %lld\n", now_ms());
  std::fflush(stdout);
  std::cerr << "agent_swarm: " << tally.registered << " of " << options.agents << " agents registered in "
            << register_seconds << " s; " << streams_started << " streams started (" << streams_per_agent
            << " per agent)" << std::endl;

  // Heartbeats: agent i at offset i/N of its interval, so the load is spread evenly.
  const auto ready = Clock::now();
  const auto window_start = ready + milliseconds(static_cast<long long>(options.warmup_seconds * 1000));
  const auto window_end = window_start + milliseconds(static_cast<long long>(options.window_seconds * 1000));
  const auto load_end = window_end + milliseconds(static_cast<long long>(options.tail_seconds * 1000));
  std::atomic<long long> in_flight{0};
  std::vector<Clock::time_point> next(agents.size());
  for (std::size_t i = 0; i < agents.size(); ++i) {
    next[i] = ready + agents[i].interval * static_cast<long long>(i) / static_cast<long long>(agents.size());
  }
  for (;;) {
    // The earliest due agent; a linear scan per heartbeat is 1000 compares, well under the
    // millisecond between heartbeats.
    std::size_t due = agents.size();
    for (std::size_t i = 0; i < agents.size(); ++i) {
      if (agents[i].agent_id.empty()) continue;
      if (due == agents.size() || next[i] < next[due]) due = i;
    }
    if (due == agents.size() || next[due] >= load_end) break;
    std::this_thread::sleep_until(next[due]);
    Agent& agent = agents[due];
    auto call = std::make_shared<HeartbeatCall>();
    call->request.set_agent_id(agent.agent_id);
    call->request.set_free_port(30000 + agent.index % 30000);
    call->sent = Clock::now();
    call->in_window = call->sent >= window_start && call->sent < window_end;
    call->context.set_deadline(std::chrono::system_clock::now() + agent.interval * 2);
    ++in_flight;
    agent.stub->async()->Heartbeat(&call->context, &call->request, &call->response,
                                   [&tally, &in_flight, call](grpc::Status status) {
                                     const double ms =
                                         std::chrono::duration<double, std::milli>(Clock::now() - call->sent).count();
                                     if (!status.ok()) tally.fail("Heartbeat", status);
                                     {
                                       std::lock_guard lock(tally.mutex);
                                       if (status.ok()) ++tally.heartbeats_ok;
                                       if (call->in_window) {
                                         ++tally.heartbeats_in_window;
                                         if (status.ok()) tally.latencies_ms.push_back(ms);
                                         else ++tally.heartbeats_failed_in_window;
                                       }
                                     }
                                     --in_flight;
                                     tally.changed.notify_all();
                                   });
    next[due] += agent.interval;
  }

  // Stop: wait (bounded) for the last heartbeats, then cancel every stream.
  bool heartbeats_done = false;
  {
    std::unique_lock lock(tally.mutex);
    heartbeats_done = tally.changed.wait_for(lock, std::chrono::seconds(10), [&] { return in_flight.load() == 0; });
    tally.stopping = true;
  }
  for (Agent& agent : agents) {
    if (agent.reader) agent.reader->context.TryCancel();
    if (agent.log_writer) agent.log_writer->context.TryCancel();
  }
  {
    std::unique_lock lock(tally.mutex);
    const bool done = tally.changed.wait_for(lock, std::chrono::seconds(20), [&] {
      return tally.streams_done >= streams_started;
    });
    if (!done || !heartbeats_done) {
      std::cerr << "agent_swarm: " << streams_started - tally.streams_done << " streams did not end after cancel, "
                << in_flight.load() << " heartbeats unanswered" << std::endl;
      lock.unlock();
      print_summary(options, tally, register_seconds);
      std::_Exit(1);  // reactors still referenced by gRPC: do not destroy them
    }
  }
  print_summary(options, tally, register_seconds);
  return all_up ? 0 : 1;
}
