// bench/demo: the demo as a user runs it — `fabricd run --nproc-per-node 2` of the digits
// example, with nothing set by hand — against the same job with OMP_NUM_THREADS set to the
// machine's CPUs in every rank, which is what each rank ran with before fabricd divided the
// CPUs among them (LibTorch starts one intra-op thread per core in every process).
// Alternating rounds (A B, B A, ...); per metric, the median of the per-round ratios with its
// min-max spread. Wall time and CPU time (the job's processes, from getrusage of the
// children) of the whole job; lower is better.
//   bench/run demo [--rounds 5] [--epochs 30] [--nproc 2]
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "common.h"

namespace {

struct Cost {
  double wall_s = 0, cpu_s = 0;
};

double children_cpu_seconds() {
  rusage usage{};
  ::getrusage(RUSAGE_CHILDREN, &usage);
  return usage.ru_utime.tv_sec + usage.ru_stime.tv_sec + (usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

// Runs the job once; its CPU time counts every process fabricd waited for (the ranks).
Cost run(const std::string& command) {
  const double cpu_before = children_cpu_seconds();
  const auto start = std::chrono::steady_clock::now();
  if (std::system(command.c_str()) != 0) {
    std::cerr << "demo: the job failed: " << command << std::endl;
    std::exit(1);
  }
  return {std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(),
          children_cpu_seconds() - cpu_before};
}

void report(const char* metric, const bench::Comparison& comparison, const std::string& baseline,
            const std::string& what) {
  std::printf("{\"bench\": \"demo\", \"case\": \"%s\", %s}\n", what.c_str(),
              comparison.json(metric, baseline, "lower").c_str());
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  int rounds = 5, epochs = 30, nproc = 2;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--rounds") rounds = std::stoi(argv[i + 1]);
    if (flag == "--epochs") epochs = std::stoi(argv[i + 1]);
    if (flag == "--nproc") nproc = std::stoi(argv[i + 1]);
  }
  const unsigned cpus = std::max(1u, std::thread::hardware_concurrency());
  const std::string logs = "/tmp/bench-demo-" + std::to_string(::getpid());
  const std::string job = std::string(FABRICD) + " run --nproc-per-node " + std::to_string(nproc) + " " + DIGITS +
                          " --accelerator cpu --epochs " + std::to_string(epochs) + " --log-dir " + logs +
                          " > /dev/null 2>&1";
  const std::string as_user = "env -u OMP_NUM_THREADS " + job;
  const std::string one_pool_per_core = "env OMP_NUM_THREADS=" + std::to_string(cpus) + " " + job;
  // Both metrics from the same runs: one alternation, read twice.
  std::vector<Cost> as_user_costs, baseline_costs;
  bench::alternate(
      rounds, [&] { as_user_costs.push_back(run(as_user)); return 0.0; },
      [&] { baseline_costs.push_back(run(one_pool_per_core)); return 0.0; });
  bench::Comparison wall, cpu;
  for (std::size_t i = 0; i < as_user_costs.size(); ++i) {
    wall.ours.push_back(as_user_costs[i].wall_s);
    wall.theirs.push_back(baseline_costs[i].wall_s);
    cpu.ours.push_back(as_user_costs[i].cpu_s);
    cpu.theirs.push_back(baseline_costs[i].cpu_s);
  }
  const std::string what = "fabricd run --nproc-per-node " + std::to_string(nproc) + " digits, " +
                           std::to_string(epochs) + " epochs, " + std::to_string(cpus) + " CPUs";
  const std::string baseline = "OMP_NUM_THREADS=" + std::to_string(cpus) + " in every rank";
  report("wall_s", wall, baseline, what);
  report("cpu_s", cpu, baseline, what);
  std::system(("rm -rf " + logs).c_str());
  return 0;
}
