// fabricd submit|list|status|watch|logs|cancel|top: JobService clients. They talk to whatever
// serves JobService at --server (a coordinator), so scripts and people use one API.
//
// Exit status: 0 done (watch: the job SUCCEEDED), 1 the job FAILED (watch), 2 a bad flag or
// spec, 3 the job was CANCELLED (watch), 4 the server refused the call or could not be
// reached (the message names the gRPC status).
#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/time_util.h>
#include <grpcpp/grpcpp.h>

#include <sys/ioctl.h>
#include <unistd.h>

#include <ctime>
#include <fstream>
#include <map>
#include <iomanip>
#include <iostream>
#include <random>
#include <sstream>
#include <thread>
#include <utility>

#include "cli/commands.h"
#include "cli/job_flags.h"
#include "cli/security_flags.h"
#include "fabric/v1/job.grpc.pb.h"
#include "jobs/job_spec.h"
#include "jobs/job_state.h"
#include "leader/leader_channel.h"

namespace fabric::launcher::cli {

namespace v1 = fabric::v1;

namespace {

constexpr int kJobFailed = 1;
constexpr int kJobCancelled = 3;
constexpr int kServerError = 4;

// How long `watch` and `logs -f` keep reconnecting to a coordinator that went away.
constexpr std::chrono::seconds kReconnectFor{60};

std::string default_server() {
  const char* server = std::getenv("FABRICD_SERVER");
  return server && *server ? server : "127.0.0.1:7070";
}

// Where the client commands send their calls, and with which credentials.
struct Server {
  std::string address = default_server();
  SecurityFlags security;
};

// The coordinator at --server, or the leader among several (comma-separated): a call that a
// follower refuses naming the leader, or that finds its coordinator gone, goes to the next.
class Coordinators {
 public:
  // Throws CredentialsError / TokenFileError; main() turns them into a usage error.
  explicit Coordinators(const Server& server)
      : leader_(server.address,
                [&server](const std::string& address) {
                  return secure_channel(address, server.security.transport, client_token(server.security));
                }),
        several_(split_addresses(server.address).size() > 1) {
    leader_.channel();  // bad credentials fail here, before any call
  }

  std::unique_ptr<v1::JobService::Stub> stub() { return v1::JobService::NewStub(leader_.channel()); }
  std::string address() { return leader_.address(); }
  // With one coordinator a call may wait for it to come back; with several it must not
  // wait on one that is gone while another leads.
  bool several() const { return several_; }
  bool follow(const grpc::Status& status, const grpc::ClientContext& context) { return leader_.follow(status, context); }

  // `call(stub, context)`, made again where the leader is, at most once per coordinator.
  template <typename Call>
  grpc::Status unary(Call&& call) {
    grpc::Status status;
    for (int attempt = 0; attempt < 4; ++attempt) {
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
      status = call(*stub(), context);
      if (!follow(status, context)) break;
    }
    return status;
  }

 private:
  LeaderChannel leader_;
  bool several_;
};

const char* code_name(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::StatusCode::NOT_FOUND: return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS: return "ALREADY_EXISTS";
    case grpc::StatusCode::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::StatusCode::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::PERMISSION_DENIED: return "PERMISSION_DENIED";
    case grpc::StatusCode::UNAUTHENTICATED: return "UNAUTHENTICATED";
    case grpc::StatusCode::CANCELLED: return "CANCELLED";
    default: return "ERROR";
  }
}

int rpc_failed(Coordinators& coordinators, const grpc::Status& status) {
  return fail(kServerError, std::string(code_name(status.error_code())) + " from " + coordinators.address() + ": " +
                                status.error_message());
}

std::string format_time(const google::protobuf::Timestamp& time) {
  if (time.seconds() == 0) return "-";
  return google::protobuf::util::TimeUtil::ToString(time);
}

std::string nodes_of(const v1::Job& job) {
  std::string nodes;
  for (const auto& node : job.nodes()) nodes += (nodes.empty() ? "" : ",") + node;
  return nodes.empty() ? "-" : nodes;
}

int outcome(v1::JobState state) {
  if (state == v1::JOB_STATE_SUCCEEDED) return 0;
  if (state == v1::JOB_STATE_CANCELLED) return kJobCancelled;
  return kJobFailed;
}

std::string new_request_id() {
  std::random_device random;
  std::ostringstream id;
  id << std::hex << random() << random() << random() << random();
  return id.str();
}

std::string read_text(const std::string& path) {
  std::ifstream file(path);
  if (!file) throw std::invalid_argument("cannot read the spec file " + path);
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

// "12s", "5m03s", "2h07m": how long a job has run.
std::string format_elapsed(std::int64_t seconds) {
  if (seconds < 0) return "-";
  char text[32];
  if (seconds < 60) {
    std::snprintf(text, sizeof(text), "%llds", static_cast<long long>(seconds));
  } else if (seconds < 3600) {
    std::snprintf(text, sizeof(text), "%lldm%02llds", static_cast<long long>(seconds / 60),
                  static_cast<long long>(seconds % 60));
  } else {
    std::snprintf(text, sizeof(text), "%lldh%02lldm", static_cast<long long>(seconds / 3600),
                  static_cast<long long>(seconds % 3600 / 60));
  }
  return text;
}

// --- submit ---------------------------------------------------------------------------

struct SubmitFlags {
  JobFlags job;
  std::string spec_file, request_id;
};

int submit(CLI::App& command, const Server& server, const SubmitFlags& flags, std::vector<std::string> program) {
  std::vector<std::string> rest = command.remaining();
  if (!rest.empty() && !program.empty()) rest.emplace_back("--");
  rest.insert(rest.end(), program.begin(), program.end());
  v1::JobSpec spec;
  if (!flags.spec_file.empty()) {
    if (!rest.empty()) return fail(kUsageError, "submit takes a --spec file or a PROGRAM, not both");
    try {
      const bool yaml = flags.spec_file.ends_with(".yaml") || flags.spec_file.ends_with(".yml");
      const std::string text = read_text(flags.spec_file);
      spec = yaml ? parse_yaml_spec(text) : parse_json_spec(text);
    } catch (const std::invalid_argument& error) {
      return fail(kUsageError, flags.spec_file + ": " + error.what());
    }
  } else {
    std::string problem;
    spec = spec_from_flags(flags.job, rest, problem);
    if (!problem.empty()) return fail(kUsageError, "submit " + problem);
  }
  v1::SubmitJobRequest request;
  *request.mutable_spec() = spec;
  // Retried below with the same id, so a lost reply never starts the program twice.
  request.set_request_id(flags.request_id.empty() ? new_request_id() : flags.request_id);
  Coordinators coordinators(server);
  grpc::Status status;
  v1::SubmitJobResponse response;
  // Five tries, three seconds of backoff between them: long enough for a coordinator on etcd
  // to lead again after etcd lost a member (a new raft leader, then a campaign), short
  // enough to tell a user soon that the store has no quorum. CANCELLED is what a call gets
  // from a coordinator that stopped leading (or serving) while it was being answered.
  for (int attempt = 0; attempt < 5; ++attempt) {
    status = coordinators.unary([&](v1::JobService::Stub& stub, grpc::ClientContext& context) {
      return stub.SubmitJob(&context, request, &response);
    });
    if (status.error_code() != grpc::StatusCode::UNAVAILABLE && status.error_code() != grpc::StatusCode::CANCELLED) {
      break;
    }
    if (attempt < 4) std::this_thread::sleep_for(std::chrono::milliseconds(200 << attempt));  // backoff
  }
  if (!status.ok()) return rpc_failed(coordinators, status);
  std::cout << response.job().job_id() << std::endl;
  return 0;
}

// --- list and status ------------------------------------------------------------------

int list(const Server& server, const std::vector<std::string>& states) {
  v1::ListJobsRequest request;
  for (const auto& name : states) {
    v1::JobState state;
    if (!v1::JobState_Parse("JOB_STATE_" + name, &state)) {
      return fail(kUsageError, "--state " + name + ": use PENDING, RUNNING, RESTARTING, SUCCEEDED, FAILED or CANCELLED");
    }
    request.add_states(state);
  }
  Coordinators coordinators(server);
  std::cout << std::left << std::setw(28) << "JOB ID" << std::setw(12) << "STATE" << std::setw(9) << "RESTARTS"
            << std::setw(20) << "NODES" << "MESSAGE\n";
  do {
    v1::ListJobsResponse response;
    const grpc::Status status = coordinators.unary([&](v1::JobService::Stub& stub, grpc::ClientContext& context) {
      return stub.ListJobs(&context, request, &response);
    });
    if (!status.ok()) return rpc_failed(coordinators, status);
    for (const auto& job : response.jobs()) {
      std::cout << std::left << std::setw(28) << job.job_id() << std::setw(12) << state_name(job.state())
                << std::setw(9) << job.restart_count() << std::setw(20) << nodes_of(job) << job.message() << "\n";
    }
    request.set_page_token(response.next_page_token());
  } while (!request.page_token().empty());
  return 0;
}

// --- top ------------------------------------------------------------------------------

struct TopFlags {
  double interval = 1;
  bool once = false;
};

// Every job the caller may see (ListJobs, all pages), newest first.
grpc::Status list_all(Coordinators& coordinators, std::vector<v1::Job>& jobs) {
  v1::ListJobsRequest request;
  do {
    v1::ListJobsResponse response;
    const grpc::Status status = coordinators.unary([&](v1::JobService::Stub& stub, grpc::ClientContext& context) {
      return stub.ListJobs(&context, request, &response);
    });
    if (!status.ok()) return status;
    jobs.insert(jobs.end(), response.jobs().begin(), response.jobs().end());
    request.set_page_token(response.next_page_token());
  } while (!request.page_token().empty());
  return grpc::Status::OK;
}

// A job's progress as top's columns show it: "-" where it has none.
struct ProgressColumns {
  std::string step = "-", steps_per_second = "-", samples_per_second = "-", loss = "-";
};

// The metric a user calls the loss: "loss", else the first whose name has "loss" in it
// ("train_loss"), as the status page picks it.
std::optional<double> loss_of(const google::protobuf::Map<std::string, double>& metrics) {
  if (const auto loss = metrics.find("loss"); loss != metrics.end()) return loss->second;
  std::optional<std::string> first;
  for (const auto& [name, value] : metrics) {
    if (name.find("loss") != std::string::npos && (!first || name < *first)) first = name;
  }
  if (!first) return std::nullopt;
  return metrics.at(*first);
}

ProgressColumns progress_columns(const v1::Job& job) {
  ProgressColumns columns;
  if (!job.has_progress()) return columns;
  const v1::JobProgress& progress = job.progress();
  const auto fixed = [](double value, int digits) {
    std::ostringstream text;
    text << std::fixed << std::setprecision(digits) << value;
    return text.str();
  };
  if (progress.has_step()) columns.step = std::to_string(progress.step());
  columns.steps_per_second = fixed(progress.steps_per_second(), 1);
  columns.samples_per_second = fixed(progress.samples_per_second(), 0);
  if (const auto loss = loss_of(progress.metrics())) {
    std::ostringstream text;
    text << std::setprecision(4) << *loss;
    columns.loss = text.str();
  }
  return columns;
}

// One screen: a header with the counts by state, then a line per job, cut to `width`, and a
// line for each job's straggler.
std::string top_frame(const std::string& server, const std::vector<v1::Job>& jobs, std::size_t width) {
  const auto now = std::chrono::system_clock::now();
  const std::int64_t now_s = std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
  std::map<std::string, int> by_state;
  for (const auto& job : jobs) ++by_state[state_name(job.state())];
  std::ostringstream frame;
  const std::time_t clock = std::chrono::system_clock::to_time_t(now);
  frame << "fabricd top   " << server << "   " << jobs.size() << (jobs.size() == 1 ? " job" : " jobs");
  const char* separator = ": ";
  for (const auto& [state, count] : by_state) {
    frame << separator << count << " " << state;
    separator = ", ";
  }
  frame << "   " << std::put_time(std::gmtime(&clock), "%H:%M:%S UTC") << "\n\n";
  std::ostringstream header;
  header << std::left << std::setw(28) << "JOB ID" << std::setw(12) << "OWNER" << std::setw(12) << "STATE"
         << std::setw(9) << "RESTARTS" << std::setw(7) << "RANKS" << std::setw(9) << "UPTIME" << std::setw(8)
         << "STEP" << std::setw(8) << "STEP/S" << std::setw(10) << "SAMPLE/S" << std::setw(10) << "LOSS"
         << std::setw(24) << "NODES" << "MESSAGE";
  std::vector<std::string> lines = {header.str()};
  std::vector<std::string> stragglers;
  for (const auto& job : jobs) {
    const std::int64_t start = job.start_time().seconds(), end = job.end_time().seconds();
    const std::int64_t uptime = start == 0 ? -1 : (end != 0 ? end : now_s) - start;
    const int ranks = job.nodes_size() * job.spec().nproc_per_node();
    std::ostringstream line;
    line << std::left << std::setw(28) << job.job_id() << std::setw(12) << (job.owner().empty() ? "-" : job.owner())
         << std::setw(12) << state_name(job.state()) << std::setw(9) << job.restart_count() << std::setw(7)
         << (ranks > 0 ? std::to_string(ranks) : "-") << std::setw(9) << format_elapsed(uptime);
    const ProgressColumns progress = progress_columns(job);
    line << std::setw(8) << progress.step << std::setw(8) << progress.steps_per_second << std::setw(10)
         << progress.samples_per_second << std::setw(10) << progress.loss << std::setw(24) << nodes_of(job)
         << job.message();
    lines.push_back(line.str());
    if (job.progress().has_straggler()) {
      stragglers.push_back("straggler in " + job.job_id() + ": " + job.progress().straggler_message());
    }
  }
  if (!stragglers.empty()) lines.emplace_back();
  lines.insert(lines.end(), stragglers.begin(), stragglers.end());
  for (auto& line : lines) {
    if (width > 0 && line.size() > width) line.resize(width);
    frame << line << "\n";
  }
  return frame.str();
}

// Redraws the jobs every interval: the screen is cleared first when stdout is a terminal,
// frames follow one another otherwise (a pipe, a log). Ends with Ctrl-C, or after one frame
// with --once. A server that goes away is said on the screen and tried again.
int top(const Server& server, const TopFlags& flags) {
  Coordinators coordinators(server);
  const bool terminal = ::isatty(STDOUT_FILENO);
  for (;;) {
    std::size_t width = 0;
    winsize size{};
    if (terminal && ::ioctl(STDOUT_FILENO, TIOCGWINSZ, &size) == 0) width = size.ws_col;
    std::vector<v1::Job> jobs;
    const grpc::Status status = list_all(coordinators, jobs);
    if (!status.ok() && flags.once) return rpc_failed(coordinators, status);
    std::string frame = status.ok() ? top_frame(coordinators.address(), jobs, width)
                                    : "fabricd top   " + coordinators.address() + "   unreachable: " +
                                          code_name(status.error_code()) + " " + status.error_message() + "\n";
    std::cout << (terminal ? "\033[H\033[2J" : "") << frame << (terminal ? "" : "\n") << std::flush;
    if (flags.once) return 0;
    std::this_thread::sleep_for(std::chrono::milliseconds(static_cast<long long>(flags.interval * 1000)));
  }
}

int status(const Server& server, const std::string& job_id, bool json) {
  Coordinators coordinators(server);
  v1::GetJobRequest request;
  request.set_job_id(job_id);
  v1::Job job;
  const grpc::Status got = coordinators.unary([&](v1::JobService::Stub& stub, grpc::ClientContext& context) {
    return stub.GetJob(&context, request, &job);
  });
  if (!got.ok()) return rpc_failed(coordinators, got);
  if (json) {
    std::string text;
    google::protobuf::util::JsonPrintOptions options;
    options.preserve_proto_field_names = true;
    (void)google::protobuf::util::MessageToJsonString(job, &text, options);
    std::cout << text << std::endl;
    return 0;
  }
  std::cout << "job:       " << job.job_id() << " (" << job.spec().name() << ")\n"
            << "state:     " << state_name(job.state()) << "\n"
            << "message:   " << job.message() << "\n"
            << "restarts:  " << job.restart_count() << " of at most " << job.spec().max_restarts() << "\n"
            << "nodes:     " << nodes_of(job) << "\n"
            << "created:   " << format_time(job.create_time()) << "\n"
            << "started:   " << format_time(job.start_time()) << "\n"
            << "ended:     " << format_time(job.end_time()) << "\n";
  if (job.has_failure()) std::cout << "failure:   " << job.failure().message() << "\n";
  return 0;
}

// --- watch ----------------------------------------------------------------------------

int watch(const Server& server, const std::string& job_id) {
  Coordinators coordinators(server);
  v1::Job last;
  bool connected = true;
  auto give_up = std::chrono::steady_clock::now() + kReconnectFor;
  for (;;) {
    grpc::ClientContext context;
    // Across a restart of the one coordinator, wait for it; with several, try the next.
    context.set_wait_for_ready(!coordinators.several());
    context.set_deadline(std::chrono::system_clock::time_point::max());
    v1::WatchJobRequest request;
    request.set_job_id(job_id);
    auto reader = coordinators.stub()->WatchJob(&context, request);
    v1::JobEvent event;
    while (reader->Read(&event)) {
      connected = true;
      give_up = std::chrono::steady_clock::now() + kReconnectFor;
      const v1::Job& job = event.job();
      // A reconnection starts with a snapshot: print it only if something changed.
      if (job.state() != last.state() || job.restart_count() != last.restart_count() || job.message() != last.message()) {
        std::cout << format_time(event.time()) << "  " << state_name(job.state()) << "  " << job.message()
                  << (job.restart_count() > 0 ? "  (restart " + std::to_string(job.restart_count()) + ")" : "")
                  << std::endl;
      }
      last = job;
      if (is_terminal(job.state())) return outcome(job.state());
    }
    const grpc::Status status = reader->Finish();
    if (status.error_code() != grpc::StatusCode::UNAVAILABLE || std::chrono::steady_clock::now() > give_up) {
      return rpc_failed(coordinators, status);
    }
    // Said once per loss, not at every attempt while a new leader is being elected.
    if (std::exchange(connected, false)) {
      std::cerr << "fabricd: lost the coordinator at " << coordinators.address() << " (" << status.error_message()
                << "); reconnecting" << std::endl;
    }
    if (coordinators.follow(status, context)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));  // never a busy loop while all are away
      continue;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));  // backoff before the next attempt
  }
}

// --- logs -----------------------------------------------------------------------------

struct LogsFlags {
  std::vector<int> ranks;
  std::string stream;
  int tail = -1;
  bool follow = false;
};

int logs(const Server& server, const std::string& job_id, const LogsFlags& flags) {
  v1::StreamLogsRequest request;
  request.set_job_id(job_id);
  for (const int rank : flags.ranks) request.add_ranks(rank);
  if (flags.stream == "stdout") request.set_stream(v1::LOG_STREAM_STDOUT);
  if (flags.stream == "stderr") request.set_stream(v1::LOG_STREAM_STDERR);
  request.set_tail_lines(flags.tail);
  request.set_follow(flags.follow);
  Coordinators coordinators(server);
  grpc::ClientContext context;
  auto reader = coordinators.stub()->StreamLogs(&context, request);
  v1::LogLine line;
  while (reader->Read(&line)) {
    (line.stream() == v1::LOG_STREAM_STDERR ? std::cerr : std::cout)
        << "[rank " << line.rank() << "] " << line.text() << '\n' << std::flush;
  }
  const grpc::Status status = reader->Finish();
  return status.ok() ? 0 : rpc_failed(coordinators, status);
}

int cancel(const Server& server, const std::string& job_id, const std::string& reason, double grace) {
  v1::CancelJobRequest request;
  request.set_job_id(job_id);
  request.set_reason(reason);
  if (grace >= 0) set_duration(request.mutable_grace_period(), std::chrono::milliseconds(static_cast<long long>(grace * 1000)));
  Coordinators coordinators(server);
  v1::Job job;
  const grpc::Status status = coordinators.unary([&](v1::JobService::Stub& stub, grpc::ClientContext& context) {
    return stub.CancelJob(&context, request, &job);
  });
  if (!status.ok()) return rpc_failed(coordinators, status);
  std::cout << job.job_id() << " " << state_name(job.state()) << std::endl;
  return 0;
}

}  // namespace

std::vector<Registered> add_client_commands(CLI::App& app) {
  auto server = std::make_shared<Server>();
  const auto add_server = [server](CLI::App* command) {
    command->add_option("--server", server->address,
                        "host:port of the coordinator, or of several that elect a leader, comma-separated (default: "
                        "$FABRICD_SERVER or 127.0.0.1:7070)");
    add_security_flags(*command, server->security, SecurityRole::kClient);
  };
  std::vector<Registered> commands;

  auto* submit_command = app.add_subcommand("submit", "Submit PROGRAM [ARGS...] (or a --spec file) as a job; prints "
                                                      "its id");
  add_server(submit_command);
  auto submit_flags = std::make_shared<SubmitFlags>();
  add_job_flags(*submit_command, submit_flags->job, /*cluster=*/true);
  submit_command->add_option("--spec", submit_flags->spec_file,
                             "a JobSpec as JSON, or YAML when it ends in .yaml/.yml (proto/fabric/v1/job.proto's fields; unknown "
                             "fields are refused)");
  submit_command->add_option("--request-id", submit_flags->request_id,
                             "idempotency key: submitting again with it returns the same job");
  submit_command->prefix_command();
  commands.emplace_back(submit_command, [submit_command, server, submit_flags](const std::vector<std::string>& program) {
    return submit(*submit_command, *server, *submit_flags, program);
  });

  auto* list_command = app.add_subcommand("list", "List jobs, newest first");
  add_server(list_command);
  auto states = std::make_shared<std::vector<std::string>>();
  list_command->add_option("--state", *states, "only jobs in this state (repeatable)")->allow_extra_args(false);
  commands.emplace_back(list_command, [server, states](const std::vector<std::string>&) { return list(*server, *states); });

  auto job_id = std::make_shared<std::string>();
  auto* status_command = app.add_subcommand("status", "Show one job");
  add_server(status_command);
  status_command->add_option("job", *job_id, "the job's id")->required();
  auto json = std::make_shared<bool>(false);
  status_command->add_flag("--json", *json, "print the Job message as JSON");
  commands.emplace_back(status_command,
                        [server, job_id, json](const std::vector<std::string>&) { return status(*server, *job_id, *json); });

  auto* watch_command = app.add_subcommand("watch", "Print a job's changes until it ends; exit with its outcome "
                                                    "(0 succeeded, 1 failed, 3 cancelled)");
  add_server(watch_command);
  watch_command->add_option("job", *job_id, "the job's id")->required();
  commands.emplace_back(watch_command, [server, job_id](const std::vector<std::string>&) { return watch(*server, *job_id); });

  auto* logs_command = app.add_subcommand("logs", "Print a job's output lines, tagged with their rank");
  add_server(logs_command);
  logs_command->add_option("job", *job_id, "the job's id")->required();
  auto logs_flags = std::make_shared<LogsFlags>();
  logs_command->add_option("--rank", logs_flags->ranks, "only this rank (repeatable)")->allow_extra_args(false);
  logs_command->add_option("--stream", logs_flags->stream, "only stdout or stderr")
      ->check(CLI::IsMember({"stdout", "stderr"}));
  logs_command->add_option("--tail", logs_flags->tail, "the last N retained lines per rank and stream (-1: all)")
      ->capture_default_str();
  logs_command->add_flag("-f,--follow", logs_flags->follow, "keep printing new lines until the job ends");
  commands.emplace_back(logs_command, [server, job_id, logs_flags](const std::vector<std::string>&) {
    return logs(*server, *job_id, *logs_flags);
  });

  auto* cancel_command = app.add_subcommand("cancel", "Cancel a job: SIGTERM to its ranks, SIGKILL after the grace "
                                                      "period");
  add_server(cancel_command);
  cancel_command->add_option("job", *job_id, "the job's id")->required();
  auto reason = std::make_shared<std::string>();
  auto grace = std::make_shared<double>(-1);
  cancel_command->add_option("--reason", *reason, "recorded in the job's message");
  cancel_command->add_option("--grace-period", *grace, "seconds between SIGTERM and SIGKILL (default: the job's)");
  commands.emplace_back(cancel_command, [server, job_id, reason, grace](const std::vector<std::string>&) {
    return cancel(*server, *job_id, *reason, *grace);
  });

  auto* top_command = app.add_subcommand("top", "Show every job you may see, with its state, restarts, ranks, "
                                                "uptime and nodes, refreshed live");
  add_server(top_command);
  auto top_flags = std::make_shared<TopFlags>();
  top_command->add_option("--interval", top_flags->interval, "seconds between refreshes")
      ->check(CLI::Range(0.1, 3600.0))
      ->capture_default_str();
  top_command->add_flag("--once", top_flags->once, "print one screen and exit (for scripts)");
  commands.emplace_back(top_command, [server, top_flags](const std::vector<std::string>&) {
    return top(*server, *top_flags);
  });
  return commands;
}

}  // namespace fabric::launcher::cli
