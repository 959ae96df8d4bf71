// fabricd: the launcher daemon. This build has one subcommand, `run`, which starts the ranks
// of a program on this node and supervises them (see supervisor/supervisor.h).
//   fabricd run --nproc-per-node 4 --max-restarts 2 ./train --epochs 10
// Exit codes: see kExitCodes below (also in `fabricd run --help`).
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <boost/process/search_path.hpp>
#include <filesystem>
#include <iostream>
#include <map>
#include <thread>

#include "supervisor/supervisor.h"

namespace {

constexpr int kUsageError = 2;
constexpr int kNotExecutable = fabric::launcher::kCannotStart;
constexpr int kNotFound = 127;

constexpr const char* kExitCodes =
    "Exit status: 0 when every rank of a generation succeeds; otherwise the status of the rank that "
    "failed first (128+N for signal N; a hung rank is killed with SIGKILL), 2 for a bad flag, 3 when the "
    "rendezvous timed out, 126 when PROGRAM is not executable or cannot start, 127 when it does not exist, "
    "128+N when fabricd itself was stopped by signal N.";

// --redirect / --tee values, torchrun's: 0 or none, 1 or stdout, 2 or stderr, 3 or all.
struct Streams {
  bool out = false, err = false;
};
const std::map<std::string, Streams> kStreamChoices = {
    {"0", {}}, {"none", {}}, {"1", {true, false}}, {"stdout", {true, false}},
    {"2", {false, true}}, {"stderr", {false, true}}, {"3", {true, true}}, {"all", {true, true}}};

// What --log-dir, --redirect and --tee make of a stream: redirect = file only, tee = file
// and console; with --log-dir alone every stream is teed.
fabric::launcher::StreamRouting routing(bool has_log_dir, bool redirect, bool tee, bool any_flag) {
  if (!has_log_dir) return {};
  if (!any_flag) return {.console = true, .file = true};
  return {.console = !redirect, .file = redirect || tee};
}

std::chrono::milliseconds to_ms(double seconds) {
  return std::chrono::milliseconds(static_cast<long long>(seconds * 1000));
}

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

// SIGINT and SIGTERM are handled on one thread of fabricd's (sigwait): the first stops the
// job (forwarded to the ranks, grace period, kill), a second SIGINT kills the ranks at once.
// block_stop_signals() must run before any other thread starts (gRPC's among them), so
// that every thread inherits the mask and no signal is delivered anywhere else.
sigset_t stop_signals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  return signals;
}

void block_stop_signals() {
  const sigset_t signals = stop_signals();
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
}

void handle_stop_signals(fabric::launcher::Supervisor& supervisor) {
  std::thread([&supervisor] {
    const sigset_t signals = stop_signals();
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
  double grace_seconds = 5, heartbeat_seconds = 300, rdzv_seconds = 1800;
  std::string redirect, tee;
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
  run->add_option("--heartbeat-timeout", heartbeat_seconds,
                  "seconds a rank may go without a heartbeat (libfabric sends them while training makes "
                  "progress) before it is declared hung, killed and handled as a failure; 0 disables")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  run->add_option("--rdzv-timeout", rdzv_seconds,
                  "seconds all ranks have to join the rendezvous once the first has (else the job ends with "
                  "status 3); also the default timeout of the store's blocking calls")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  run->add_option("--redirect", redirect,
                  "send these streams of every rank only to the log files: 0/none, 1/stdout, 2/stderr, 3/all "
                  "(needs --log-dir)")
      ->check(CLI::IsMember(kStreamChoices));
  run->add_option("--tee", tee,
                  "send these streams to the log files and the console: 0/none, 1/stdout, 2/stderr, 3/all "
                  "(needs --log-dir; with --log-dir alone, all streams are teed)")
      ->check(CLI::IsMember(kStreamChoices));
  run->footer(kExitCodes);
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
  job.grace_period = to_ms(grace_seconds);
  job.heartbeat_timeout = to_ms(heartbeat_seconds);
  job.rdzv_timeout = to_ms(rdzv_seconds);
  const bool any_stream_flag = !redirect.empty() || !tee.empty();
  if (any_stream_flag && job.log_dir.empty()) {
    return fail(kUsageError, "--redirect and --tee write to log files: add --log-dir DIR");
  }
  const Streams redirected = redirect.empty() ? Streams{} : kStreamChoices.at(redirect);
  const Streams teed = tee.empty() ? Streams{} : kStreamChoices.at(tee);
  const bool has_log_dir = !job.log_dir.empty();
  job.stdout_routing = routing(has_log_dir, redirected.out, teed.out, any_stream_flag);
  job.stderr_routing = routing(has_log_dir, redirected.err, teed.err, any_stream_flag);
  if (has_log_dir) {
    std::error_code error;
    std::filesystem::create_directories(job.log_dir, error);
    if (error) return fail(kUsageError, "--log-dir " + job.log_dir + ": " + error.message());
  }

  block_stop_signals();
  try {
    fabric::launcher::Supervisor supervisor(job);
    handle_stop_signals(supervisor);
    return supervisor.run();
  } catch (const std::exception& error) {  // e.g. no loopback port for the rendezvous
    return fail(fabric::launcher::kCannotStart, error.what());
  }
}
