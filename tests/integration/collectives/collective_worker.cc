// One rank of the collective tests (collectives_test.cc starts several). It finds its peers
// through the environment (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) and runs a scenario:
//   ops         every collective, checked against values computed from the ranks; exit 0
//   peer-exits  the last rank leaves after rendezvous; the others all_reduce
//   peer-hangs  the last rank sleeps after rendezvous; the others all_reduce
// A CollectiveError prints "COLLECTIVE_ERROR: <message>" and exits 3.
#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <iostream>
#include <thread>

#include "fabric/collective.h"
#include "fabric/errors.h"

namespace {

void check(bool condition, const std::string& what) {
  if (!condition) {
    std::cerr << "CHECK FAILED: " << what << std::endl;
    std::exit(1);
  }
}

void run_ops(fabric::Collective& collective) {
  const int rank = collective.rank(), world = collective.world_size();
  collective.barrier();

  torch::Tensor value = torch::full({3}, static_cast<float>(rank));
  collective.broadcast(value, world - 1);
  check(torch::equal(value, torch::full({3}, static_cast<float>(world - 1))), "broadcast from the last rank");
  check(collective.broadcast_bytes(rank == 0 ? "hello from zero" : "", 0) == "hello from zero", "broadcast bytes");

  const float total = world * (world - 1) / 2.0f;  // 0 + 1 + ... + (world - 1)
  auto reduced = [&](fabric::ReduceOp op) {
    torch::Tensor t = torch::full({2}, static_cast<float>(rank));
    collective.all_reduce(t, op);
    return t[0].item<float>();
  };
  check(reduced(fabric::ReduceOp::kSum) == total, "sum");
  check(reduced(fabric::ReduceOp::kMean) == total / world, "mean");
  check(reduced(fabric::ReduceOp::kMax) == world - 1, "max");
  check(reduced(fabric::ReduceOp::kMin) == 0, "min");
  torch::Tensor integer = torch::full({1}, rank, torch::kInt64);
  collective.all_reduce(integer, fabric::ReduceOp::kMean);
  check(integer.item<std::int64_t>() == static_cast<std::int64_t>(total) / world, "integer mean truncates");

  // Rank r contributes r + 1 rows: dimension 0 differs between ranks.
  auto gathered = collective.all_gather(torch::full({rank + 1, 2}, static_cast<float>(rank)));
  check(static_cast<int>(gathered.size()) == world, "one tensor per rank");
  for (int r = 0; r < world; ++r) {
    check(gathered[r].size(0) == r + 1 && gathered[r].size(1) == 2, "gathered shape of rank " + std::to_string(r));
    check(torch::equal(gathered[r], torch::full({r + 1, 2}, static_cast<float>(r))), "gathered values");
  }
  collective.barrier();
}

}  // namespace

int main(int argc, char** argv) {
  const std::string scenario = argc > 1 ? argv[1] : "ops";
  const int timeout_ms = argc > 2 ? std::stoi(argv[2]) : 30000;
  try {
    auto environment = fabric::detect_environment();
    auto collective =
        fabric::make_collective(*environment, torch::kCPU, {.timeout = std::chrono::milliseconds(timeout_ms)});
    const bool last = collective->rank() == collective->world_size() - 1;
    if (scenario == "ops") {
      run_ops(*collective);
    } else if (scenario == "peer-exits" || scenario == "peer-hangs") {
      collective->barrier();  // everyone is connected
      if (last && scenario == "peer-exits") std::_Exit(7);
      if (last) std::this_thread::sleep_for(std::chrono::hours(1));  // killed by the test
      torch::Tensor t = torch::ones({4});
      const auto start = std::chrono::steady_clock::now();
      try {
        collective->all_reduce(t, fabric::ReduceOp::kSum);
      } catch (const fabric::CollectiveError&) {
        // How long the failing operation itself took, for the test's timing bounds.
        const auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
        std::cout << "ELAPSED_MS: " << elapsed.count() << std::endl;
        throw;
      }
      std::cerr << "all_reduce unexpectedly succeeded" << std::endl;
      return 1;
    }
  } catch (const fabric::CollectiveError& error) {
    std::cout << "COLLECTIVE_ERROR: " << error.what() << std::endl;
    return 3;
  }
  std::cout << "OK" << std::endl;
  return 0;
}
