// Collectives across real processes: every operation on 3 ranks; shared memory (the default
// on one node) against Gloo for every op, dtype and odd size; no /dev/shm left by a killed
// job; and the two ways a peer fails — it exits, or it hangs — each of which must turn into
// a CollectiveError on the survivors, naming the operation, within the configured timeout,
// on both backends.
#include <gtest/gtest.h>
#include <dirent.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "support/processes.h"

namespace {

using Clock = std::chrono::steady_clock;
using fabric::testing::exit_code;
using fabric::testing::read_file;
using fabric::testing::RankProcess;

std::vector<RankProcess> start_ranks(int world, const std::string& scenario, int timeout_ms,
                                     const std::string& backend = "", std::vector<std::string> more = {}) {
  std::vector<std::string> args{scenario, std::to_string(timeout_ms), backend};
  args.insert(args.end(), more.begin(), more.end());
  return fabric::testing::start_ranks(COLLECTIVE_WORKER, world, args);
}

// Waits (up to `limit`) until `file` holds `text`: the worker prints it once it got there.
bool wait_for_text(const std::string& file, const std::string& text, std::chrono::seconds limit) {
  const auto deadline = Clock::now() + limit;
  while (Clock::now() < deadline) {
    if (read_file(file).find(text) != std::string::npos) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

std::vector<std::string> shm_segments() {
  std::vector<std::string> names;
  if (DIR* directory = ::opendir("/dev/shm")) {
    while (const dirent* entry = ::readdir(directory)) {
      if (std::string(entry->d_name).rfind("fabric-shm-", 0) == 0) names.emplace_back(entry->d_name);
    }
    ::closedir(directory);
  }
  return names;
}

// The failure cases run on both paths: the default (shared memory, every rank being on this
// node) and Gloo itself; each names its backend in the error.
class CollectiveFailures : public ::testing::TestWithParam<std::string> {
 protected:
  std::string backend_flag() const { return GetParam() == "shm" ? "" : GetParam(); }
};

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

TEST(Collectives, SharedMemoryAgreesWithGlooForEveryOpDtypeAndOddSize) {
  auto ranks = start_ranks(3, "parity", 60000, "", {std::to_string(fabric::testing::free_port())});
  for (auto& rank : ranks) {
    EXPECT_EQ(exit_code(rank, std::chrono::seconds(120)), 0) << read_file(rank.output);
    ::unlink(rank.output.c_str());
  }
}

TEST(Collectives, AKilledJobLeavesNoSharedMemoryBehind) {
  const auto before = shm_segments();
  auto ranks = start_ranks(3, "hold", 30000);
  for (auto& rank : ranks) ASSERT_TRUE(wait_for_text(rank.output, "READY shm", std::chrono::seconds(60))) << read_file(rank.output);
  EXPECT_EQ(shm_segments(), before) << "the segment has no name once every rank mapped it";
  for (auto& rank : ranks) ::kill(rank.pid, SIGKILL);
  for (auto& rank : ranks) {
    EXPECT_EQ(exit_code(rank, std::chrono::seconds(30)), 128 + SIGKILL);
    ::unlink(rank.output.c_str());
  }
  EXPECT_EQ(shm_segments(), before) << "nothing is left in /dev/shm after SIGKILL";
}

TEST_P(CollectiveFailures, PeerThatExits_FailsTheOthersWithTheOperationNamed) {
  const auto start = Clock::now();
  auto ranks = start_ranks(2, "peer-exits", 5000, backend_flag());
  EXPECT_EQ(exit_code(ranks[1], std::chrono::seconds(30)), 7);
  EXPECT_EQ(exit_code(ranks[0], std::chrono::seconds(30)), 3);
  const std::string output = read_file(ranks[0].output);
  EXPECT_NE(output.find("all_reduce failed on rank 0 of 2 (" + GetParam() + ","), std::string::npos) << output;
  if (GetParam() == "shm") EXPECT_NE(output.find("rank 1 (pid " + std::to_string(ranks[1].pid) + ") exited"), std::string::npos) << output;
  EXPECT_LT(Clock::now() - start, std::chrono::milliseconds(5000 + 3000)) << "within the timeout (+ start-up)";
  EXPECT_LT(elapsed_ms(output), 1000) << "a peer that exits is noticed at once, not at the timeout: " << output;
  for (auto& rank : ranks) ::unlink(rank.output.c_str());
}

TEST_P(CollectiveFailures, PeerThatHangs_FailsTheOthersWhenTheTimeoutExpires) {
  constexpr int kTimeoutMs = 2000;
  auto ranks = start_ranks(2, "peer-hangs", kTimeoutMs, backend_flag());
  EXPECT_EQ(exit_code(ranks[0], std::chrono::seconds(30)), 3);
  const std::string output = read_file(ranks[0].output);
  EXPECT_NE(output.find("all_reduce failed on rank 0 of 2 (" + GetParam() + ","), std::string::npos) << output;
  EXPECT_GE(elapsed_ms(output), kTimeoutMs - 100) << "it waited for the hung peer: " << output;
  EXPECT_LE(elapsed_ms(output), kTimeoutMs + 1000) << "and no longer than the timeout + 1 s: " << output;
  ::kill(ranks[1].pid, SIGKILL);  // the hung rank
  exit_code(ranks[1], std::chrono::seconds(10));
  for (auto& rank : ranks) ::unlink(rank.output.c_str());
}

INSTANTIATE_TEST_SUITE_P(Backends, CollectiveFailures, ::testing::Values("shm", "gloo"));

}  // namespace
