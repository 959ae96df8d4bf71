// fabricd run: one job on this node (local/local_job.h), the torchrun experience.
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <filesystem>
#include <iostream>

#include <signal.h>

#include "cli/commands.h"
#include "cli/job_flags.h"
#include "cli/security_flags.h"
#include "cli/signals.h"
#include "jobs/job_spec.h"
#include "local/local_job.h"
#include "local/local_job_service.h"
#include "cli/metrics_flags.h"
#include "observability/introspection.h"
#include "observability/rpc_metrics.h"
#include "ranks/ports.h"
#include "ranks/rank_group.h"
#include "status/status_page.h"

namespace fabric::launcher::cli {

namespace v1 = fabric::v1;

namespace {

constexpr const char* kExitCodes =
    "Exit status: 0 when every rank of a generation succeeds; otherwise the status of the rank that "
    "failed first (128+N for signal N; a hung rank is killed with SIGKILL), 2 for a bad flag, 3 when the "
    "rendezvous timed out, 126 when PROGRAM is not executable or cannot start, 127 when it does not exist, "
    "128+N when fabricd itself was stopped by signal N.";

// Without --serve the page is the only way in: open unless --token-file asks for tokens, as
// the loopback metrics beside it are.
std::shared_ptr<const Authenticator> page_authenticator(const SecurityFlags& security) {
  TokenTable tokens = security.token_file.empty() ? TokenTable() : TokenTable::load(security.token_file);
  const bool open = tokens.empty();
  return std::make_shared<const Authenticator>(AuthenticatorOptions{.tokens = std::move(tokens), .tls = false, .open = open});
}

// The status page of a `fabricd run`: its one job, on this node's nproc_per_node slots.
StatusPage::Source local_status(const LocalJobService& service, const v1::JobSpec& spec) {
  return [&service, slots = spec.nproc_per_node()](const Caller&) {
    v1::Job job = service.job();
    NodeStatus node{.name = job.nodes_size() > 0 ? job.nodes(0) : host_name(), .slots = slots, .jobs = {job.job_id()}};
    if (job.state() == v1::JOB_STATE_RUNNING) node.used_slots = slots;
    return StatusSnapshot{.jobs = {std::move(job)}, .nodes = {std::move(node)}};
  };
}

int run_job(CLI::App& command, const JobFlags& flags, const std::string& serve, const SecurityFlags& security,
            const std::string& metrics_listen, std::vector<std::string> program) {
  // Without "--", the parser's prefix command left PROGRAM [ARGS...] in remaining(); with
  // one after PROGRAM, it belongs to the program's own arguments.
  std::vector<std::string> rest = command.remaining();
  if (!rest.empty() && !program.empty()) rest.emplace_back("--");
  rest.insert(rest.end(), program.begin(), program.end());
  std::string problem;
  v1::JobSpec spec = spec_from_flags(flags, rest, problem);
  if (!problem.empty()) return fail(kUsageError, "run " + problem);
  if (problem = validate(spec); !problem.empty()) return fail(kUsageError, problem);
  spec = with_defaults(std::move(spec));
  try {
    const char* path = std::getenv("PATH");
    spec.set_program(resolve_program(spec.program(), spec.working_dir(), path ? path : ""));
  } catch (const SpawnError& error) {
    return fail(error.status(), error.what());
  }
  if (!spec.log().dir().empty()) {
    std::error_code error;
    std::filesystem::create_directories(spec.log().dir(), error);
    if (error) return fail(kUsageError, "--log-dir " + spec.log().dir() + ": " + error.message());
  }
  block_stop_signals();
  try {
    const std::string job_id = unique_local_job_id();
    std::atomic<LocalJob*> running{nullptr};  // for CancelJob, once the job exists
    MetricsRegistry metrics;
    // The job's JobService: served over gRPC with --serve, and the status page's source.
    std::unique_ptr<LocalJobService> service;
    std::unique_ptr<StatusPage> status_page;
    std::unique_ptr<MetricsServer> metrics_server;
    std::unique_ptr<grpc::Server> server;
    std::shared_ptr<grpc::ServerCredentials> credentials;
    if (!serve.empty() || !metrics_listen.empty()) {
      std::shared_ptr<const Authenticator> authenticator;
      try {
        if (!serve.empty()) credentials = server_credentials(security.transport, "fabricd run --serve", serve);
        authenticator = serve.empty() ? page_authenticator(security) : server_authenticator(security);
      } catch (const std::exception& error) {
        return fail(kUsageError, error.what());
      }
      service = std::make_unique<LocalJobService>(
          job_id, spec, [&running] {
            if (LocalJob* job = running.load()) job->request_stop(SIGTERM, false);
          },
          authenticator);
    }
    if (!metrics_listen.empty()) {
      status_page = std::make_unique<StatusPage>("fabricd run", service->authenticator(), local_status(*service, spec));
      try {
        metrics_server = start_metrics_server(metrics_listen, metrics, "fabricd", status_page->routes());
      } catch (const std::exception& error) {
        return fail(kUsageError, error.what());
      }
    }
    if (!serve.empty()) {
      int port = 0;
      enable_server_introspection();
      grpc::ServerBuilder builder;
      builder.AddListeningPort(serve, credentials, &port);
      apply_server_limits(builder, {});
      add_rpc_metrics(builder, metrics);
      builder.RegisterService(service.get());
      server = builder.BuildAndStart();
      if (!server || port == 0) return fail(kUsageError, "--serve " + serve + ": cannot listen there");
      report_serving(*server, {"fabric.v1.JobService"});
      std::cerr << "fabricd: serving JobService for job " << job_id << " on "
                << serve.substr(0, serve.rfind(':')) << ":" << port << std::endl;
    }
    LocalJobHooks hooks = service ? service->hooks() : LocalJobHooks{};
    hooks.metrics = &metrics;
    LocalJob job(std::move(spec), std::cout, std::cerr, std::move(hooks), job_id);
    running.store(&job);
    const StopSignalHandler signals(
        [&job](int signal, bool repeated) { job.request_stop(signal, repeated && signal == SIGINT); });
    const int status = job.run();
    if (server) {  // before `job` goes: CancelJob may call it until the server has shut down
      report_shutting_down(*server);
      service->shutdown();
      server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
    }
    return status;
  } catch (const std::exception& error) {  // e.g. no loopback port for the rendezvous
    return fail(kCannotStart, error.what());
  }
}

}  // namespace

Registered add_run(CLI::App& app) {
  auto* command = app.add_subcommand(
      "run", "Run PROGRAM [ARGS...] as --nproc-per-node ranks on this node, restarting the whole group when a rank "
             "fails");
  auto flags = std::make_shared<JobFlags>();
  auto serve = std::make_shared<std::string>();
  auto security = std::make_shared<SecurityFlags>();
  auto metrics_listen = std::make_shared<std::string>();
  add_job_flags(*command, *flags, /*cluster=*/false);
  command->add_option("--serve", *serve,
                      "also serve JobService for this job on host:port (port 0: any free one), so that fabricd "
                      "watch/logs/cancel --server or any gRPC client follows it; off by default");
  add_security_flags(*command, *security, SecurityRole::kServer);  // for --serve
  add_metrics_flag(*command, *metrics_listen);
  command->footer(kExitCodes);
  command->prefix_command();  // PROGRAM and everything after it belong to the program
  return {command, [command, flags, serve, security, metrics_listen](const std::vector<std::string>& program) {
            return run_job(*command, *flags, *serve, *security, *metrics_listen, program);
          }};
}

int fail(int code, const std::string& message) {
  std::cerr << "fabricd: " << message << std::endl;
  return code;
}

}  // namespace fabric::launcher::cli
