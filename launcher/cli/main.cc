// fabricd: the launcher daemon. This build has one subcommand, `run`, which starts the ranks
// of a program on this node and supervises them (see supervisor/supervisor.h).
//   fabricd run --nproc-per-node 4 --max-restarts 2 ./train --epochs 10
// Exit codes: the job's (0, or the failing rank's status), 2 for a bad flag, 126 for a
// program that is not executable, 127 for one that does not exist, 128+N after signal N.
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <boost/process/search_path.hpp>
#include <filesystem>
#include <iostream>
#include <thread>

#include "supervisor/supervisor.h"

namespace {

constexpr int kUsageError = 2;
constexpr int kNotExecutable = 126;
constexpr int kNotFound = 127;

int fail(int code, const std::string& message) {
  std::cerr << "fabricd: " << message << std::endl;
  return code;
}

// "auto": one rank per NVIDIA GPU this node exposes, else one.
int auto_nproc() {
  int gpus = 0;
  for (int i = 0; i < 64; ++i) gpus += ::access(("/dev/nvidia" + std::to_string(i)).c_str(), F_OK) == 0;
  return gpus > 0 ? gpus : 1;
}

// Blocks SIGINT/SIGTERM in every thread and handles them on one: the first stops the job
// (forwarded to the ranks, grace period, kill), a second SIGINT kills the ranks at once.
void handle_signals(fabric::launcher::Supervisor& supervisor) {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::thread([&supervisor, signals] {
    bool stopping = false;
    for (int signal = 0;;) {
      if (sigwait(&signals, &signal) != 0) continue;
      supervisor.request_stop(signal, stopping && signal == SIGINT);
      stopping = true;
    }
  }).detach();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"fabricd: start and supervise the ranks of a training job"};
  app.require_subcommand(1);
  auto* run = app.add_subcommand("run", "Run PROGRAM [ARGS...] as --nproc-per-node ranks on this node, restarting "
                                        "the whole group when a rank fails");
  std::string nproc = "1";
  fabric::launcher::JobOptions job;
  std::vector<std::string> env_pairs;
  std::vector<int> console_ranks;
  double grace_seconds = 5;
  run->add_option("--nproc-per-node", nproc, "ranks to start on this node: a number, or auto (one per GPU, else 1)")
      ->capture_default_str();
  run->add_option("--max-restarts", job.max_restarts, "restarts of the whole group after a rank fails")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  run->add_option("--log-dir", job.log_dir, "write each rank's stdout and stderr to rank_N.std{out,err}.log here");
  run->add_option("--env", env_pairs, "KEY=VALUE added to every rank's environment (repeatable)");
  run->add_option("--local-ranks-filter", console_ranks, "only these ranks print to the console (all still log)")
      ->delimiter(',');
  run->add_option("--grace-period", grace_seconds, "seconds between SIGTERM and SIGKILL when stopping ranks")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  run->prefix_command();  // PROGRAM and everything after it belong to the program
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return kUsageError;
  }

  const std::vector<std::string> rest = run->remaining();
  if (rest.empty()) return fail(kUsageError, "run needs a PROGRAM to start (fabricd run --help)");
  job.program = rest.front();
  job.args.assign(rest.begin() + 1, rest.end());
  if (job.program.find('/') == std::string::npos) {
    const auto found = boost::process::search_path(job.program);
    if (found.empty()) return fail(kNotFound, "program '" + job.program + "' not found in PATH");
    job.program = found.string();
  }
  if (::access(job.program.c_str(), F_OK) != 0) return fail(kNotFound, "program '" + job.program + "' does not exist");
  if (::access(job.program.c_str(), X_OK) != 0) {
    return fail(kNotExecutable, "program '" + job.program + "' is not executable (chmod +x it?)");
  }
  try {
    job.nproc_per_node = nproc == "auto" ? auto_nproc() : std::stoi(nproc);
  } catch (const std::exception&) {
    job.nproc_per_node = 0;
  }
  if (job.nproc_per_node < 1) return fail(kUsageError, "--nproc-per-node " + nproc + ": use a positive number or auto");
  for (const auto& pair : env_pairs) {
    const auto equals = pair.find('=');
    if (equals == std::string::npos || equals == 0) return fail(kUsageError, "--env " + pair + ": use KEY=VALUE");
    job.env[pair.substr(0, equals)] = pair.substr(equals + 1);
  }
  job.console_ranks = console_ranks;
  job.grace_period = std::chrono::milliseconds(static_cast<long>(grace_seconds * 1000));
  if (!job.log_dir.empty()) std::filesystem::create_directories(job.log_dir);

  fabric::launcher::Supervisor supervisor(job);
  handle_signals(supervisor);
  return supervisor.run();
}
