// One rank of the collective tests (collectives_test.cc starts several). It finds its peers
// through the environment (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) and runs a scenario:
//   ops         every collective, checked against values computed from the ranks; exit 0
//   peer-exits  the last rank leaves after rendezvous; the others all_reduce
//   peer-hangs  the last rank sleeps after rendezvous; the others all_reduce
//   parity      the default backend (shared memory; with Gloo between nodes when the ranks
//               span several) against Gloo itself, a second group on GLOO_PORT, for every
//               op, dtype and odd size; the default must be named EXPECTED ("shm" if absent)
//   hold        rendezvous, one all_reduce, print "READY", then wait to be killed
// Arguments: SCENARIO TIMEOUT_MS [BACKEND ("" = the default, or "gloo")] [GLOO_PORT] [EXPECTED].
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

// Rank r's data for one case, the same wherever it is made (so any rank can make every
// rank's, for the reference).
torch::Tensor case_data(int rank, torch::ScalarType type, std::int64_t count) {
  torch::manual_seed(1000 * rank + 7 * static_cast<int>(type) + count);
  if (torch::isFloatingType(type)) return torch::randn({count}, torch::kFloat64).to(type);
  const std::int64_t low = type == torch::kByte ? 0 : -20;
  return torch::randint(low, low + 40, {count}, torch::kInt64).to(type);
}

void run_parity(fabric::Collective& shared, fabric::Collective& gloo, const std::string& expected) {
  check(shared.backend() == expected, "the default backend is " + expected + ", not " + std::string(shared.backend()));
  check(gloo.backend() == "gloo", "the second group is Gloo");
  const int rank = shared.rank(), world = shared.world_size();
  const std::vector<torch::ScalarType> types = {torch::kFloat,  torch::kDouble, torch::kBFloat16, torch::kHalf,
                                                torch::kChar,   torch::kByte,   torch::kInt,      torch::kLong};
  for (const auto type : types) {
    // One ulp (relative) of each floating type: the most Gloo's pairwise rounding may differ.
    const double ulp = type == torch::kBFloat16 ? 0x1p-7 : type == torch::kHalf ? 0x1p-10
                       : type == torch::kFloat  ? 0x1p-23 : 0x1p-52;
    for (const std::int64_t count : {1, 7, 4097, 300001}) {
      const std::string where = std::string(c10::toString(type)) + " x " + std::to_string(count);
      const torch::Tensor data = case_data(rank, type, count);
      torch::Tensor reference_sum = torch::zeros({count}, torch::kFloat64);
      torch::Tensor magnitude = torch::zeros({count}, torch::kFloat64);  // sum of |x|: what rounding scales with
      for (int r = 0; r < world; ++r) {
        reference_sum += case_data(r, type, count).to(torch::kFloat64);
        magnitude += case_data(r, type, count).to(torch::kFloat64).abs();
      }
      for (const auto op : {fabric::ReduceOp::kSum, fabric::ReduceOp::kMax, fabric::ReduceOp::kMin}) {
        torch::Tensor ours = data.clone(), theirs = data.clone();
        shared.all_reduce(ours, op);
        gloo.all_reduce(theirs, op);
        if (!torch::isFloatingType(type) || op != fabric::ReduceOp::kSum) {
          check(torch::equal(ours, theirs), "all_reduce agrees exactly with Gloo: " + where);
          continue;
        }
        // Ours rounds once on one node (16-bit types are summed in float, whose own
        // rounding is the second term); across nodes each node's sum is rounded, then Gloo
        // rounds after every addition of those (the third term: nodes - 1 <= world - 1).
        // Gloo alone rounds after every addition, so it may stray further.
        const torch::Tensor our_error = (ours.to(torch::kFloat64) - reference_sum).abs();
        const double sum_ulp = type == torch::kDouble ? 0x1p-52 : 0x1p-23;  // the type it sums in
        const double between_nodes_ulp = expected == "shm" ? 0 : ulp * (world - 1);
        check((our_error <= reference_sum.abs() * ulp + magnitude * (sum_ulp * (world - 1) + between_nodes_ulp))
                  .all().item<bool>(),
              "the shared-memory sum is within an ulp of the float64 sum: " + where);
        check(((ours.to(torch::kFloat64) - theirs.to(torch::kFloat64)).abs() <= magnitude * world * ulp)
                  .all().item<bool>(),
              "and within rounding of Gloo's: " + where);
      }
      torch::Tensor ours = data.clone(), theirs = data.clone();
      shared.broadcast(ours, world - 1);
      gloo.broadcast(theirs, world - 1);
      check(torch::equal(ours, case_data(world - 1, type, count)) && torch::equal(ours, theirs), "broadcast: " + where);
      const auto gathered = shared.all_gather(data), gathered_by_gloo = gloo.all_gather(data);
      for (int r = 0; r < world; ++r) {
        check(torch::equal(gathered[r], case_data(r, type, count)) && torch::equal(gathered[r], gathered_by_gloo[r]),
              "all_gather of rank " + std::to_string(r) + ": " + where);
      }
    }
  }
  shared.barrier();
  gloo.barrier();
}

}  // namespace

int main(int argc, char** argv) {
  const std::string scenario = argc > 1 ? argv[1] : "ops";
  const int timeout_ms = argc > 2 ? std::stoi(argv[2]) : 30000;
  const std::string backend = argc > 3 ? argv[3] : "";
  try {
    auto environment = fabric::detect_environment();
    const fabric::CollectiveOptions options{.timeout = std::chrono::milliseconds(timeout_ms), .backend = backend};
    auto collective = fabric::make_collective(*environment, torch::kCPU, options);
    const bool last = collective->rank() == collective->world_size() - 1;
    if (scenario == "ops") {
      run_ops(*collective);
    } else if (scenario == "parity") {
      ::setenv("MASTER_PORT", argv[4], 1);  // the second group's own store
      auto gloo = fabric::make_collective(*fabric::detect_environment(), torch::kCPU,
                                          {.timeout = options.timeout, .backend = "gloo"});
      run_parity(*collective, *gloo, argc > 5 ? argv[5] : "shm");
    } else if (scenario == "hold") {
      torch::Tensor t = torch::ones({1024});
      collective->all_reduce(t, fabric::ReduceOp::kSum);
      std::cout << "READY " << collective->backend() << std::endl;
      std::this_thread::sleep_for(std::chrono::hours(1));  // killed by the test
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
