// StandbyPool and RankGroup's use of it, over real processes of standby_probe (a program
// linked with the standby wait, as every libfabric program is): a standby waits before
// main(), becomes a process with exactly the environment it is given, is reaped when it
// died waiting, and leaves nothing behind when released; a RankGroup takes its ranks from
// standbys first and starts the rest.
#include "ranks/standby_pool.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <map>
#include <string>
#include <thread>

#include "fabric/worker/standby.h"
#include "ranks/rank_group.h"
#include "unit/launcher/rank_recorders.h"

namespace {

using fabric::launcher::close_descriptors;
using fabric::launcher::ProcessSpec;
using fabric::launcher::RankGroupOptions;
using fabric::launcher::RankProcess;
using fabric::launcher::StandbyPool;
using fabric::launcher::StartedProcess;
using fabric::testing::CollectingSink;
using fabric::testing::ExitRecorder;
using fabric::testing::kPatience;

const std::string kProbe = STANDBY_PROBE;

ProcessSpec probe_spec() { return {.program = kProbe, .env = {{"PATH", "/usr/bin:/bin"}, {"LOADED_WITH", "1"}}}; }

// Polls the pool (its standbys' ready bytes: nothing to block on) until `count` are ready.
bool wait_until_ready(StandbyPool& pool, std::size_t count) {
  const auto deadline = std::chrono::steady_clock::now() + kPatience;
  while (pool.ready() < count) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

// The first line `fd` gives, read with a deadline.
std::string first_line(int fd) {
  std::string text;
  char c = 0;
  pollfd readable{.fd = fd, .events = POLLIN, .revents = 0};
  while (::poll(&readable, 1, static_cast<int>(kPatience / std::chrono::milliseconds(1))) == 1 &&
         ::read(fd, &c, 1) == 1 && c != '\n') {
    text += c;
  }
  return text;
}

int exit_status(pid_t pid) {
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

bool exists(pid_t pid) { return ::kill(pid, 0) == 0; }

TEST(StandbyPool, AStandbyWaitsBeforeMainAndBecomesAProcessWithExactlyTheEnvironmentGiven) {
  StandbyPool pool(probe_spec());
  pool.fill(1);
  ASSERT_TRUE(wait_until_ready(pool, 1));
  const std::map<std::string, std::string> env{{"PATH", "/usr/bin:/bin"}, {"RANK", "3"}, {"EXIT_CODE", "7"}};
  std::optional<StartedProcess> taken = pool.take(env);
  ASSERT_TRUE(taken);
  EXPECT_EQ(pool.size(), 0u);
  // RANK reached main() (it was not in the environment the standby was loaded with), and
  // nothing else did: neither LOADED_WITH nor the control socket's variable.
  EXPECT_EQ(first_line(taken->out_fd),
            "main pid=" + std::to_string(taken->pid) + " standby=1 rank=3 variables=3 standby_fd=unset");
  EXPECT_EQ(exit_status(taken->pid), 7);
  close_descriptors(*taken);
}

TEST(StandbyPool, AStandbyTakenWhileItStillLoadsGetsItsRankWhenItArrives) {
  StandbyPool pool(probe_spec());
  pool.fill(1);
  std::optional<StartedProcess> taken = pool.take({{"RANK", "0"}});  // at once, likely before it is ready
  ASSERT_TRUE(taken);
  EXPECT_EQ(first_line(taken->out_fd), "main pid=" + std::to_string(taken->pid) + " standby=1 rank=0 variables=1 standby_fd=unset");
  EXPECT_EQ(exit_status(taken->pid), 0);
  close_descriptors(*taken);
}

TEST(StandbyPool, AStandbyThatDiedWaitingIsSkippedAndReaped) {
  StandbyPool pool(probe_spec());
  pool.fill(2);
  ASSERT_TRUE(wait_until_ready(pool, 2));
  const std::vector<pid_t> pids = pool.pids();
  ASSERT_EQ(pids.size(), 2u);
  ASSERT_EQ(::kill(pids[0], SIGKILL), 0);
  // Dead (a zombie: its socket is closed), not reaped: that is left to the pool.
  siginfo_t info{};
  ASSERT_EQ(::waitid(P_PID, static_cast<id_t>(pids[0]), &info, WEXITED | WNOWAIT), 0);
  std::optional<StartedProcess> taken = pool.take({{"RANK", "1"}});
  ASSERT_TRUE(taken);
  EXPECT_EQ(taken->pid, pids[1]);
  EXPECT_FALSE(exists(pids[0])) << "the dead standby was not reaped";
  EXPECT_EQ(exit_status(taken->pid), 0);
  close_descriptors(*taken);
  EXPECT_FALSE(pool.take({{"RANK", "2"}}));  // none left
}

TEST(StandbyPool, ReleasedStandbysLeaveNoProcessBehind) {
  std::vector<pid_t> pids;
  {
    StandbyPool pool(probe_spec());
    pool.fill(3);
    pool.fill(3);  // already full: starts nothing more
    EXPECT_EQ(pool.size(), 3u);
    ASSERT_TRUE(wait_until_ready(pool, 1));  // some waiting, maybe some still loading
    pids = pool.pids();
  }
  for (const pid_t pid : pids) EXPECT_FALSE(exists(pid)) << pid;
}

TEST(StandbyPool, AProgramThatCannotStartIsASpawnError) {
  StandbyPool pool({.program = "/nonexistent/program"});
  EXPECT_THROW(pool.fill(1), fabric::launcher::SpawnError);
}

// Two ranks of standby_probe, rank r with RANK=r.
RankGroupOptions probe_ranks(int count, std::int32_t generation, StandbyPool* standbys) {
  RankGroupOptions options{.program = kProbe, .generation = generation, .standbys = standbys};
  for (int r = 0; r < count; ++r) {
    options.ranks.push_back(RankProcess{.rank = r, .local_rank = r, .env = {{"RANK", std::to_string(r)}}});
  }
  return options;
}

TEST(RankGroupFromStandbys, TakesWhatThePoolHasAndStartsTheRest_EachLineAndExitUnderItsRank) {
  StandbyPool pool(probe_spec());
  pool.fill(1);
  ASSERT_TRUE(wait_until_ready(pool, 1));
  const pid_t standby = pool.pids().at(0);
  CollectingSink sink;
  ExitRecorder exits;
  {
    fabric::launcher::RankGroup group(probe_ranks(2, 1, &pool), sink, exits.callback());
    EXPECT_EQ(group.standby_ranks(), std::vector<std::int32_t>{0});
    ASSERT_TRUE(exits.wait_for(2));
  }
  // Rank 0 went to the standby (the pool's oldest), rank 1 was started: it says so itself.
  EXPECT_EQ(sink.value(0, "main pid="), std::to_string(standby) + " standby=1 rank=0 variables=1 standby_fd=unset");
  const auto started = sink.value(1, "main pid=");
  ASSERT_TRUE(started);
  EXPECT_NE(started->find(" standby=0 rank=1 variables=1 "), std::string::npos) << *started;
  for (const auto& line : sink.lines()) EXPECT_EQ(line.generation, 1);
  ASSERT_TRUE(exits.of(0) && exits.of(1));
  EXPECT_EQ(exits.of(0)->status, 0);
  EXPECT_EQ(exits.of(1)->status, 0);
}

TEST(StandbyProtocol, AssignmentsRoundTripAndBrokenOnesAreRefused) {
  using fabric::worker::decode_assignment;
  using fabric::worker::encode_assignment;
  const std::map<std::string, std::string> env{{"A", ""}, {"B", "x=y"}, {"PATH", "/bin"}};
  EXPECT_EQ(decode_assignment(encode_assignment(env)), env);
  EXPECT_EQ(decode_assignment(encode_assignment({})), (std::map<std::string, std::string>{}));
  EXPECT_FALSE(decode_assignment(""));
  EXPECT_FALSE(decode_assignment(std::string("A=1\0", 4)));            // no terminator
  EXPECT_FALSE(decode_assignment(std::string("NOEQUALS\0\0", 10)));    // an entry without '='
  EXPECT_FALSE(decode_assignment(std::string("=1\0\0", 4)));           // without a name
}

}  // namespace
