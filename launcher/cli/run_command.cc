// fabricd run: one job on this node (local/local_job.h), the torchrun experience.
#include <filesystem>
#include <iostream>

#include <signal.h>

#include "cli/commands.h"
#include "cli/job_flags.h"
#include "cli/signals.h"
#include "jobs/job_spec.h"
#include "local/local_job.h"
#include "ranks/rank_group.h"

namespace fabric::launcher::cli {

namespace v1 = fabric::v1;

namespace {

constexpr const char* kExitCodes =
    "Exit status: 0 when every rank of a generation succeeds; otherwise the status of the rank that "
    "failed first (128+N for signal N; a hung rank is killed with SIGKILL), 2 for a bad flag, 3 when the "
    "rendezvous timed out, 126 when PROGRAM is not executable or cannot start, 127 when it does not exist, "
    "128+N when fabricd itself was stopped by signal N.";

int run_job(CLI::App& command, const JobFlags& flags, std::vector<std::string> program) {
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
    LocalJob job(std::move(spec), std::cout, std::cerr);
    handle_stop_signals([&job](int signal, bool repeated) { job.request_stop(signal, repeated && signal == SIGINT); });
    return job.run();
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
  add_job_flags(*command, *flags, /*cluster=*/false);
  command->footer(kExitCodes);
  command->prefix_command();  // PROGRAM and everything after it belong to the program
  return {command, [command, flags](const std::vector<std::string>& program) {
            return run_job(*command, *flags, program);
          }};
}

int fail(int code, const std::string& message) {
  std::cerr << "fabricd: " << message << std::endl;
  return code;
}

}  // namespace fabric::launcher::cli
