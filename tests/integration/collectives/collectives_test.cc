// Collectives across real processes: every operation on 3 ranks, and the two ways a peer
// fails — it exits, or it hangs — each of which must turn into a CollectiveError on the
// survivors, naming the operation, within the configured timeout.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <vector>

#include "support/processes.h"

namespace {

using Clock = std::chrono::steady_clock;
using fabric::testing::exit_code;
using fabric::testing::read_file;
using fabric::testing::RankProcess;

std::vector<RankProcess> start_ranks(int world, const std::string& scenario, int timeout_ms) {
  return fabric::testing::start_ranks(COLLECTIVE_WORKER, world, {scenario, std::to_string(timeout_ms)});
}

// The failing all_reduce's own duration, as the worker reported it.
int elapsed_ms(const std::string& output) {
  const auto at = output.find("ELAPSED_MS: ");
  return at == std::string::npos ? -1 : std::stoi(output.substr(at + 12));
}

TEST(Collectives, EveryOperationAgreesAcrossThreeRanks) {
  auto ranks = start_ranks(3, "ops", 30000);
  for (auto& rank : ranks) {
    EXPECT_EQ(exit_code(rank, std::chrono::seconds(60)), 0) << read_file(rank.output);
    ::unlink(rank.output.c_str());
  }
}

TEST(Collectives, PeerThatExits_FailsTheOthersWithTheOperationNamed) {
  const auto start = Clock::now();
  auto ranks = start_ranks(2, "peer-exits", 5000);
  EXPECT_EQ(exit_code(ranks[1], std::chrono::seconds(30)), 7);
  EXPECT_EQ(exit_code(ranks[0], std::chrono::seconds(30)), 3);
  const std::string output = read_file(ranks[0].output);
  EXPECT_NE(output.find("all_reduce failed on rank 0 of 2"), std::string::npos) << output;
  EXPECT_LT(Clock::now() - start, std::chrono::milliseconds(5000 + 3000)) << "within the timeout (+ start-up)";
  EXPECT_LT(elapsed_ms(output), 1000) << "a peer that exits is noticed at once, not at the timeout: " << output;
  for (auto& rank : ranks) ::unlink(rank.output.c_str());
}

TEST(Collectives, PeerThatHangs_FailsTheOthersWhenTheTimeoutExpires) {
  constexpr int kTimeoutMs = 2000;
  auto ranks = start_ranks(2, "peer-hangs", kTimeoutMs);
  EXPECT_EQ(exit_code(ranks[0], std::chrono::seconds(30)), 3);
  const std::string output = read_file(ranks[0].output);
  EXPECT_NE(output.find("all_reduce failed on rank 0 of 2"), std::string::npos) << output;
  EXPECT_GE(elapsed_ms(output), kTimeoutMs - 100) << "it waited for the hung peer: " << output;
  EXPECT_LE(elapsed_ms(output), kTimeoutMs + 1000) << "and no longer than the timeout + 1 s: " << output;
  ::kill(ranks[1].pid, SIGKILL);  // the hung rank
  exit_code(ranks[1], std::chrono::seconds(10));
  for (auto& rank : ranks) ::unlink(rank.output.c_str());
}

}  // namespace
