#include "cli/job_flags.h"

#include <unistd.h>

#include <map>

#include "jobs/job_spec.h"

namespace fabric::launcher::cli {

namespace v1 = fabric::v1;

namespace {

// --redirect / --tee values, torchrun's: 0 or none, 1 or stdout, 2 or stderr, 3 or all.
const std::map<std::string, v1::Streams> kStreamChoices = {
    {"0", v1::STREAMS_NONE},   {"none", v1::STREAMS_NONE},     {"1", v1::STREAMS_STDOUT},
    {"stdout", v1::STREAMS_STDOUT}, {"2", v1::STREAMS_STDERR}, {"stderr", v1::STREAMS_STDERR},
    {"3", v1::STREAMS_ALL},    {"all", v1::STREAMS_ALL}};

std::chrono::milliseconds to_ms(double seconds) {
  return std::chrono::milliseconds(static_cast<long long>(seconds * 1000));
}

// "auto": one rank per NVIDIA GPU this node exposes, else one.
int auto_nproc() {
  int gpus = 0;
  for (int i = 0; i < 64; ++i) gpus += ::access(("/dev/nvidia" + std::to_string(i)).c_str(), F_OK) == 0;
  return gpus > 0 ? gpus : 1;
}

int positive_or_zero(const std::string& text) {
  try {
    std::size_t used = 0;
    const int value = std::stoi(text, &used);
    return used == text.size() && value > 0 ? value : 0;
  } catch (const std::exception&) {
    return 0;
  }
}

}  // namespace

void add_job_flags(CLI::App& command, JobFlags& flags, bool cluster) {
  command.add_option("--nproc-per-node", flags.nproc_per_node,
                     "ranks to start on each node: a number, or auto (one per GPU, else 1)")
      ->capture_default_str();
  if (cluster) {
    command.add_option("--nnodes,--num-nodes", flags.nodes,
                       "nodes the job spans: N, or MIN:MAX for an elastic job that restarts on the survivors "
                       "when a node is lost")
        ->capture_default_str();
    command.add_option("--name", flags.name, "a label for listings (default: the program's file name)");
    command.add_option("--working-dir", flags.working_dir, "the ranks' working directory on every node");
  }
  command.add_option("--max-restarts", flags.max_restarts, "restarts of the whole group after a rank fails")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  command.add_flag("--warm-standby", flags.warm_standby,
                   "fork every generation's ranks on a node from one process that loaded the program once, so that "
                   "starts and restarts do not load LibTorch per rank (programs linked with libfabric; where it "
                   "cannot fork, `fabricd run` restarts from loaded standbys)");
  command.add_option("--log-dir", flags.log_dir, "write each rank's stdout and stderr to rank_N.std{out,err}.log here");
  // One value per flag: a vector option would otherwise swallow the program after it.
  command.add_option("--env", flags.env, "KEY=VALUE added to every rank's environment (repeatable)")->allow_extra_args(false);
  command.add_option("--local-ranks-filter", flags.console_ranks, "only these ranks print to the console (all still log)")
      ->delimiter(',')
      ->allow_extra_args(false);
  command.add_option("--grace-period", flags.grace_seconds, "seconds between SIGTERM and SIGKILL when stopping ranks")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  command.add_option("--heartbeat-timeout", flags.heartbeat_seconds,
                     "seconds a rank may go without a heartbeat (libfabric sends them while training makes "
                     "progress) before it is declared hung, killed and handled as a failure; 0 disables")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  command.add_option("--rdzv-timeout", flags.rdzv_seconds,
                     "seconds all ranks have to join the rendezvous once the first has (else the job ends with "
                     "status 3); also the default timeout of the store's blocking calls")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  command.add_option("--redirect", flags.redirect,
                     "send these streams of every rank only to the log files: 0/none, 1/stdout, 2/stderr, 3/all "
                     "(needs --log-dir)")
      ->check(CLI::IsMember(kStreamChoices));
  command.add_option("--tee", flags.tee,
                     "send these streams to the log files and the console: 0/none, 1/stdout, 2/stderr, 3/all "
                     "(needs --log-dir; with --log-dir alone, all streams are teed)")
      ->check(CLI::IsMember(kStreamChoices));
}

v1::JobSpec spec_from_flags(const JobFlags& flags, const std::vector<std::string>& program, std::string& problem) {
  v1::JobSpec spec;
  if (program.empty()) {
    problem = "needs a PROGRAM to start (--help)";
    return spec;
  }
  spec.set_program(program.front());
  for (auto arg = program.begin() + 1; arg != program.end(); ++arg) spec.add_args(*arg);
  spec.set_name(flags.name);
  spec.set_working_dir(flags.working_dir);
  const int nproc = flags.nproc_per_node == "auto" ? auto_nproc() : positive_or_zero(flags.nproc_per_node);
  if (nproc < 1) {
    problem = "--nproc-per-node " + flags.nproc_per_node + ": use a positive number or auto";
    return spec;
  }
  spec.set_nproc_per_node(nproc);
  const auto colon = flags.nodes.find(':');
  const int max_nodes = positive_or_zero(colon == std::string::npos ? flags.nodes : flags.nodes.substr(colon + 1));
  const int min_nodes = colon == std::string::npos ? max_nodes : positive_or_zero(flags.nodes.substr(0, colon));
  if (max_nodes < 1 || min_nodes < 1 || min_nodes > max_nodes) {
    problem = "--nnodes " + flags.nodes + ": use N, or MIN:MAX with 1 <= MIN <= MAX";
    return spec;
  }
  spec.set_num_nodes(max_nodes);
  spec.set_min_nodes(min_nodes);
  spec.set_max_restarts(flags.max_restarts);
  spec.set_warm_standby(flags.warm_standby);
  for (const auto& pair : flags.env) {
    const auto equals = pair.find('=');
    if (equals == std::string::npos || equals == 0) {
      problem = "--env " + pair + ": use KEY=VALUE";
      return spec;
    }
    (*spec.mutable_env())[pair.substr(0, equals)] = pair.substr(equals + 1);
  }
  set_duration(spec.mutable_grace_period(), to_ms(flags.grace_seconds));
  set_duration(spec.mutable_heartbeat_timeout(), to_ms(flags.heartbeat_seconds));
  set_duration(spec.mutable_rdzv_timeout(), to_ms(flags.rdzv_seconds));
  auto& log = *spec.mutable_log();
  log.set_dir(flags.log_dir);
  if ((!flags.redirect.empty() || !flags.tee.empty()) && flags.log_dir.empty()) {
    problem = "--redirect and --tee write to log files: add --log-dir DIR";
    return spec;
  }
  if (!flags.redirect.empty()) log.set_redirect(kStreamChoices.at(flags.redirect));
  if (!flags.tee.empty()) log.set_tee(kStreamChoices.at(flags.tee));
  for (const int rank : flags.console_ranks) log.add_console_ranks(rank);
  return spec;
}

void split_at_separator(int argc, char** argv, std::vector<std::string>& before, std::vector<std::string>& after) {
  int i = 0;
  for (; i < argc && std::string(argv[i]) != "--"; ++i) before.emplace_back(argv[i]);
  for (++i; i < argc; ++i) after.emplace_back(argv[i]);
}

}  // namespace fabric::launcher::cli
