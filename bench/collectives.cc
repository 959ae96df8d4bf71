// bench/collectives: Fabric's collectives on one node, shared memory (the default when every
// rank is on this node) against Gloo over loopback TCP (the same program with
// FABRIC_SHARED_MEMORY=0, i.e. LibTorch's ProcessGroupGloo at its defaults), all_reduce of
// float32 sums from 4 KB to 64 MB, world size 2, one thread per rank. Bus bandwidth is algbw
// x 2(n-1)/n, as nccl-tests report it. Beside it, in the same run and with the same two
// processes copying at once, a STREAM-style copy (memcpy of the same bytes): what memory
// moves per second here, the roof an all-reduce works under.
// Lines: allreduce-<size>-ws2 (shm vs gloo) and allreduce-<size>-ws2-vs-copy (shm vs copy).
//   bench/run collectives [--rounds N] [--sizes-kb 4,64,1024,...]
// (the same binary is the worker when FABRIC_BENCH_WORKER is set)
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "common.h"
#include "fabric/fabric.h"
#include "fabric/strategies.h"

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

// About a quarter of a second of work per size, at least 5 operations.
int iterations_for(std::size_t bytes) {
  return static_cast<int>(std::clamp<std::size_t>((std::size_t{256} << 20) / bytes, 5, 4000));
}

// Worker (both ranks): for each size, seconds per all_reduce and per copy, on rank 0's stdout
// as "<bytes> <all_reduce seconds> <copy seconds> <backend>".
int worker(const std::vector<std::size_t>& sizes) {
  torch::set_num_threads(1);
  fabric::Fabric fabric({.accelerator = "cpu", .strategy = "ddp", .devices = 2});
  fabric.launch();  // rank 0 re-executes this binary as rank 1
  for (std::size_t bytes : sizes) {
    const int iterations = iterations_for(bytes);
    torch::Tensor tensor = torch::ones({static_cast<std::int64_t>(bytes / 4)});
    fabric.all_reduce(tensor, "sum");  // warm: pages touched, paths taken once
    fabric.barrier();
    auto start = Clock::now();
    for (int i = 0; i < iterations; ++i) fabric.all_reduce(tensor, "sum");
    fabric.barrier();
    const double all_reduce = seconds_since(start) / iterations;

    std::vector<char> source(bytes, 1), target(bytes, 0);
    std::memcpy(target.data(), source.data(), bytes);
    fabric.barrier();
    start = Clock::now();
    for (int i = 0; i < iterations; ++i) {
      source[static_cast<std::size_t>(i) % bytes] = static_cast<char>(i);  // not a copy the compiler may drop
      std::memcpy(target.data(), source.data(), bytes);
    }
    const double copy = seconds_since(start) / iterations;
    fabric.barrier();
    if (fabric.global_rank() == 0) {
      std::printf("%zu %.9f %.9f %s\n", bytes, all_reduce, copy,
                  dynamic_cast<fabric::DDPStrategy&>(fabric.strategy()).process_group_backend().c_str());
    }
  }
  return 0;
}

struct Sweep {
  std::map<std::size_t, double> all_reduce, copy;  // seconds per operation, by size
  std::string backend;
};

Sweep run_sweep(const std::string& self, const std::string& sizes, bool shared_memory) {
  const std::string output = bench::run_command(std::string(shared_memory ? "" : "FABRIC_SHARED_MEMORY=0 ") +
                                                "FABRIC_BENCH_WORKER=1 " + self + " " + sizes + " 2>/dev/null");
  Sweep sweep;
  std::istringstream lines(output);
  std::size_t bytes = 0;
  double all_reduce = 0, copy = 0;
  while (lines >> bytes >> all_reduce >> copy >> sweep.backend) {
    sweep.all_reduce[bytes] = all_reduce;
    sweep.copy[bytes] = copy;
  }
  const std::string expected = shared_memory ? "shm" : "gloo";
  if (sweep.backend != expected) {
    std::fprintf(stderr, "bench/collectives: the %s side ran on \"%s\":\n%s\n", expected.c_str(), sweep.backend.c_str(),
                 output.c_str());
    std::exit(1);
  }
  return sweep;
}

std::string size_name(std::size_t bytes) {
  return bytes >= (1u << 20) ? std::to_string(bytes >> 20) + "mb" : std::to_string(bytes >> 10) + "kb";
}

}  // namespace

int main(int argc, char** argv) {
  if (std::getenv("FABRIC_BENCH_WORKER")) {
    std::vector<std::size_t> sizes;
    for (int size_kb : bench::parse_int_list(argv[1])) sizes.push_back(static_cast<std::size_t>(size_kb) << 10);
    return worker(sizes);
  }
  const std::string self = argv[0];
  int rounds = 5;
  std::string sizes_kb = "4,16,64,256,1024,4096,16384,65536";
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::string(argv[i]) == "--rounds") rounds = std::stoi(argv[i + 1]);
    if (std::string(argv[i]) == "--sizes-kb") sizes_kb = argv[i + 1];
  }
  // Alternating rounds of whole sweeps: shm first in even rounds, Gloo first in odd ones.
  std::vector<Sweep> shm, gloo;
  for (int round = 0; round < rounds; ++round) {
    if (round % 2 == 0) shm.push_back(run_sweep(self, sizes_kb, true));
    gloo.push_back(run_sweep(self, sizes_kb, false));
    if (round % 2 == 1) shm.push_back(run_sweep(self, sizes_kb, true));
  }
  constexpr double kBusFactor = 2.0 * (2 - 1) / 2;  // 2(n-1)/n, n = 2
  for (int size_kb : bench::parse_int_list(sizes_kb)) {
    const std::size_t bytes = static_cast<std::size_t>(size_kb) << 10;
    bench::Comparison versus_gloo, versus_copy;
    for (int round = 0; round < rounds; ++round) {
      const double shm_bus = bytes / shm[round].all_reduce.at(bytes) * kBusFactor / 1e9;
      versus_gloo.ours.push_back(shm_bus);
      versus_gloo.theirs.push_back(bytes / gloo[round].all_reduce.at(bytes) * kBusFactor / 1e9);
      versus_copy.ours.push_back(shm_bus);
      versus_copy.theirs.push_back(bytes / shm[round].copy.at(bytes) / 1e9);  // bytes copied per second
    }
    const std::string name = "allreduce-" + size_name(bytes) + "-ws2";
    std::printf("{\"bench\": \"collectives\", \"case\": \"%s\", \"bytes\": %zu, %s}\n", name.c_str(), bytes,
                versus_gloo.json("bus_gb_per_s", "gloo-tcp-loopback", "higher", "%.3f").c_str());
    std::printf("{\"bench\": \"collectives\", \"case\": \"%s-vs-copy\", \"bytes\": %zu, %s}\n", name.c_str(), bytes,
                versus_copy.json("bus_gb_per_s", "memcpy-per-rank-both-copying", "higher", "%.3f").c_str());
    std::fflush(stdout);
  }
  return 0;
}
