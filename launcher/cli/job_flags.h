// The flags that describe a job, shared by `fabricd run` and `fabricd submit`: both build
// one JobSpec from them (jobs/job_spec.h), so a flag means the same thing on one node and
// on a cluster.
#pragma once

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "fabric/v1/job.pb.h"

namespace fabric::launcher::cli {

inline constexpr int kUsageError = 2;
// serve and agent: the listening address could not be had.
inline constexpr int kCannotListen = 3;

struct JobFlags {
  std::string nproc_per_node = "1";
  std::string nodes = "1";  // N or MIN:MAX (submit only)
  int max_restarts = 0;
  bool warm_standby = false;
  std::string log_dir;
  std::vector<std::string> env;
  std::vector<int> console_ranks;
  double grace_seconds = 5, heartbeat_seconds = 300, rdzv_seconds = 1800;
  std::string redirect, tee;
  std::string name, working_dir;
};

// Adds the flags to `command`; `cluster` adds --nnodes, --name and --working-dir.
void add_job_flags(CLI::App& command, JobFlags& flags, bool cluster);

// The JobSpec the flags and PROGRAM [ARGS...] describe, or a usage error's message in
// `problem`. "auto" nproc_per_node is resolved here (one per GPU of this machine, else 1).
fabric::v1::JobSpec spec_from_flags(const JobFlags& flags, const std::vector<std::string>& program, std::string& problem);

// Splits argv at a literal "--" (torchrun's separator before the program): `before` is
// for the flag parser, `after` is the program and its arguments. Without one, `after` is
// empty and the parser's prefix command finds the program itself.
void split_at_separator(int argc, char** argv, std::vector<std::string>& before, std::vector<std::string>& after);

}  // namespace fabric::launcher::cli
