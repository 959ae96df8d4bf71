// Collectives across real processes: every operation on 3 ranks; shared memory (the default
// on one node) against Gloo for every op, dtype and odd size, on one node and across two;
// no /dev/shm left by a killed job; and the two ways a peer fails — it exits, or it hangs —
// each of which must turn into a CollectiveError on the survivors, naming the operation,
// within the configured timeout, on both backends.
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

// Two nodes on this machine, as far as shared memory can tell: each a holder process in
// its own IPC and mount namespaces with its own /dev/shm (a fresh tmpfs), so that ranks
// entered into different ones cannot map each other's segments, as on two hosts. They still
// reach each other over loopback TCP, as Gloo between nodes does. Needs root.
class TwoNodes {
 public:
  TwoNodes() {
    holders_ = fabric::testing::start_ranks(
        "/usr/bin/unshare", 2,
        {"--ipc", "--mount", "--propagation", "private", "sh", "-c",
         "mount -t tmpfs tmpfs /dev/shm && echo NODE-READY && exec sleep 600"});
    for (auto& holder : holders_) ready_ = ready_ && wait_for_text(holder.output, "NODE-READY", std::chrono::seconds(30));
  }
  ~TwoNodes() {
    for (auto& holder : holders_) {
      ::kill(holder.pid, SIGKILL);
      exit_code(holder, std::chrono::seconds(30));
      ::unlink(holder.output.c_str());
    }
  }
  bool ready() const { return ready_; }
  std::string why_not() const { return read_file(holders_[0].output) + read_file(holders_[1].output); }

  // Ranks of the collective worker, rank r on node r % 2 (so each node's ranks are not
  // consecutive, and rank 1 leads node 1).
  std::vector<RankProcess> start_ranks(int world, std::vector<std::string> args) const {
    const std::string holders = std::to_string(holders_[0].pid) + " " + std::to_string(holders_[1].pid);
    std::vector<std::string> wrapped{
        "-c", "holders=(" + holders + "); exec nsenter -t ${holders[RANK % 2]} --ipc --mount -- \"$0\" \"$@\"",
        COLLECTIVE_WORKER};
    wrapped.insert(wrapped.end(), args.begin(), args.end());
    return fabric::testing::start_ranks("/bin/bash", world, wrapped);
  }

 private:
  std::vector<RankProcess> holders_;
  bool ready_ = true;
};

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

TEST(Collectives, AcrossTwoNodes_SharedMemoryWithinEachAndGlooBetweenAgreeWithGloo) {
  if (::geteuid() != 0) GTEST_SKIP() << "making nodes out of namespaces needs root (CI runs as root)";
  TwoNodes nodes;
  ASSERT_TRUE(nodes.ready()) << nodes.why_not();
  auto ranks = nodes.start_ranks(4, {"parity", "60000", "", std::to_string(fabric::testing::free_port()), "shm+gloo"});
  for (auto& rank : ranks) {
    EXPECT_EQ(exit_code(rank, std::chrono::seconds(180)), 0) << read_file(rank.output);
    ::unlink(rank.output.c_str());
  }
}

TEST(Collectives, AcrossTwoNodes_APeerThatExits_FailsBothNodesWellBeforeTheTimeout) {
  if (::geteuid() != 0) GTEST_SKIP() << "making nodes out of namespaces needs root (CI runs as root)";
  TwoNodes nodes;
  ASSERT_TRUE(nodes.ready()) << nodes.why_not();
  constexpr int kTimeoutMs = 20000;
  // Rank 3 (node 1, not its leader) exits: its leader hears of it through shared memory,
  // node 0's leader through Gloo, and node 0's other rank through its leader.
  auto ranks = nodes.start_ranks(4, {"peer-exits", std::to_string(kTimeoutMs), ""});
  EXPECT_EQ(exit_code(ranks[3], std::chrono::seconds(60)), 7);
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(exit_code(ranks[r], std::chrono::seconds(60)), 3) << "rank " << r;
    const std::string output = read_file(ranks[r].output);
    EXPECT_NE(output.find("all_reduce failed on rank " + std::to_string(r) + " of 4 (shm+gloo,"), std::string::npos)
        << output;
    EXPECT_LT(elapsed_ms(output), kTimeoutMs / 4) << "long before the timeout, on every node: " << output;
  }
  const std::string exited = "rank 3 (pid " + std::to_string(ranks[3].pid) + ") exited";
  EXPECT_NE(read_file(ranks[1].output).find(exited), std::string::npos) << "its leader saw it go, by its own rank number";
  EXPECT_NE(read_file(ranks[2].output).find("rank 0 gave up on the group"), std::string::npos)
      << "node 0 heard of it through its leader, not at the timeout";
  for (auto& rank : ranks) ::unlink(rank.output.c_str());
}

TEST(Collectives, AcrossTwoNodes_APeerThatHangs_FailsEveryOtherRankWhenTheTimeoutExpires) {
  if (::geteuid() != 0) GTEST_SKIP() << "making nodes out of namespaces needs root (CI runs as root)";
  TwoNodes nodes;
  ASSERT_TRUE(nodes.ready()) << nodes.why_not();
  constexpr int kTimeoutMs = 2000;
  // Rank 3 (node 1) sleeps: its leader times out in shared memory and exits, which ends
  // node 0's Gloo step with it; nobody waits past the timeout for the rank that hangs.
  auto ranks = nodes.start_ranks(4, {"peer-hangs", std::to_string(kTimeoutMs), ""});
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(exit_code(ranks[r], std::chrono::seconds(60)), 3) << "rank " << r;
    const std::string output = read_file(ranks[r].output);
    EXPECT_NE(output.find("all_reduce failed on rank " + std::to_string(r) + " of 4 (shm+gloo,"), std::string::npos)
        << output;
    EXPECT_LE(elapsed_ms(output), kTimeoutMs + 1000) << "no longer than the timeout + 1 s: " << output;
  }
  EXPECT_NE(read_file(ranks[1].output).find("timed out after 2000 ms waiting for rank 3"), std::string::npos)
      << read_file(ranks[1].output);
  ::kill(ranks[3].pid, SIGKILL);  // the hung rank
  exit_code(ranks[3], std::chrono::seconds(30));
  for (auto& rank : ranks) ::unlink(rank.output.c_str());
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
  if (GetParam() == "shm") {
    EXPECT_NE(output.find("rank 1 (pid " + std::to_string(ranks[1].pid) + ") exited"), std::string::npos) << output;
  }
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
