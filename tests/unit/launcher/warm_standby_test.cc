// Warm standbys over real processes of standby_probe (a program linked with the standby
// wait, as every libfabric program is). StandbyPool: a standby waits before main(), becomes a
// process with exactly the environment it is given, is reaped when it died waiting, and
// leaves nothing behind when released. Zygote: it forks ranks that run main() with exactly
// their environment as its children, reports their exits and signals, refuses when told to,
// and takes its ranks with it when it dies or is let go. A RankGroup takes its ranks from
// the zygote, then the standbys, and starts the rest.
#include "ranks/standby_pool.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <thread>

#include "fabric/worker/standby.h"
#include "ranks/rank_group.h"
#include "ranks/zygote.h"
#include "unit/launcher/rank_recorders.h"

namespace {

using fabric::launcher::close_descriptors;
using fabric::launcher::ProcessSpec;
using fabric::launcher::RankGroupOptions;
using fabric::launcher::RankProcess;
using fabric::launcher::StandbyPool;
using fabric::launcher::StartedProcess;
using fabric::launcher::Zygote;
using fabric::testing::CollectingSink;
using fabric::testing::ExitRecorder;
using fabric::testing::kPatience;

const std::string kProbe = STANDBY_PROBE;
// What every rank process is given, however it was started: its own process group, no
// signal blocked, SIGKILL when its parent dies, and its own name (a standby's was
// "fabricd-standby" while it waited).
const std::string kAsARankStarts = "own_group=1 blocked=0 death_signal=9 name=standby_probe";

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
  EXPECT_EQ(first_line(taken->out_fd), "main pid=" + std::to_string(taken->pid) +
                                           " standby=1 rank=3 variables=3 standby_fd=unset ppid=" + std::to_string(::getpid()));
  EXPECT_EQ(first_line(taken->out_fd), kAsARankStarts);
  EXPECT_EQ(exit_status(taken->pid), 7);
  close_descriptors(*taken);
}

// Taken at once, before it is likely to have said it is ready: whatever its progress, it
// gets its rank.
TEST(StandbyPool, AStandbyTakenAtOnceGetsItsRankWhenItArrives) {
  StandbyPool pool(probe_spec());
  pool.fill(1);
  std::optional<StartedProcess> taken = pool.take({{"RANK", "0"}});  // at once, likely before it is ready
  ASSERT_TRUE(taken);
  EXPECT_EQ(first_line(taken->out_fd), "main pid=" + std::to_string(taken->pid) +
                                           " standby=1 rank=0 variables=1 standby_fd=unset ppid=" + std::to_string(::getpid()));
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
  EXPECT_EQ(sink.value(0, "main pid="), std::to_string(standby) + " standby=1 rank=0 variables=1 standby_fd=unset ppid=" +
                                           std::to_string(::getpid()));
  const auto started = sink.value(1, "main pid=");
  ASSERT_TRUE(started);
  EXPECT_NE(started->find(" standby=0 rank=1 variables=1 "), std::string::npos) << *started;
  for (const auto& line : sink.lines()) EXPECT_EQ(line.generation, 1);
  ASSERT_TRUE(exits.of(0) && exits.of(1));
  EXPECT_EQ(exits.of(0)->status, 0);
  EXPECT_EQ(exits.of(1)->status, 0);
}

// Whether `pid` is still running: it exists and is not a zombie (once its parent, the
// zygote, is gone, it is init's to reap, whenever init does).
bool running(pid_t pid) {
  if (!exists(pid)) return false;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  const auto close = text.rfind(')');
  return close == std::string::npos || close + 2 >= text.size() || text[close + 2] != 'Z';
}

// Polls (the process is not our child: nothing to block on) until `pid` no longer runs.
bool gone_within_patience(pid_t pid) {
  const auto deadline = std::chrono::steady_clock::now() + kPatience;
  while (running(pid)) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

TEST(Zygote, ForksRanksThatRunMainAsItsChildrenWithExactlyTheEnvironmentGiven) {
  Zygote zygote(probe_spec());
  ASSERT_TRUE(zygote.serving()) << zygote.refusal();
  for (const int rank : {0, 1}) {
    std::optional<StartedProcess> forked = zygote.fork_rank({{"RANK", std::to_string(rank)}, {"EXIT_CODE", "3"}});
    ASSERT_TRUE(forked);
    EXPECT_EQ(first_line(forked->out_fd), "main pid=" + std::to_string(forked->pid) + " standby=1 rank=" +
                                              std::to_string(rank) + " variables=2 standby_fd=unset ppid=" +
                                              std::to_string(zygote.pid()));
    EXPECT_EQ(first_line(forked->out_fd), kAsARankStarts);
    EXPECT_EQ(zygote.wait(forked->pid), 3);
    close_descriptors(*forked);
  }
}

TEST(Zygote, AKilledRankIsReportedWithItsSignal) {
  Zygote zygote(probe_spec());
  std::optional<StartedProcess> forked = zygote.fork_rank({{"WAIT_FOR_SIGNAL", "1"}});
  ASSERT_TRUE(forked);
  ASSERT_FALSE(first_line(forked->out_fd).empty());  // in main(), waiting
  ASSERT_EQ(::kill(-forked->pid, SIGKILL), 0);      // its own process group, as RankGroup signals it
  EXPECT_EQ(zygote.wait(forked->pid), 128 + SIGKILL);
  close_descriptors(*forked);
}

TEST(Zygote, RefusesToForkWhenTheJobSaysNot) {
  ProcessSpec spec = probe_spec();
  spec.env[fabric::worker::kNoZygoteVariable] = "1";
  Zygote zygote(spec);
  EXPECT_FALSE(zygote.serving());
  EXPECT_NE(zygote.refusal().find("FABRICD_NO_ZYGOTE=1"), std::string::npos) << zygote.refusal();
  EXPECT_FALSE(zygote.fork_rank({{"RANK", "0"}}));
}

TEST(Zygote, ItsRanksDieWithItAndTheirWaitSaysSigkill) {
  Zygote zygote(probe_spec());
  std::optional<StartedProcess> forked = zygote.fork_rank({{"WAIT_FOR_SIGNAL", "1"}});
  ASSERT_TRUE(forked);
  ASSERT_FALSE(first_line(forked->out_fd).empty());
  ASSERT_EQ(::kill(zygote.pid(), SIGKILL), 0);
  EXPECT_EQ(zygote.wait(forked->pid), 128 + SIGKILL);
  EXPECT_TRUE(gone_within_patience(forked->pid));
  EXPECT_FALSE(zygote.serving());
  EXPECT_FALSE(zygote.fork_rank({{"RANK", "0"}}));
  close_descriptors(*forked);
}

TEST(Zygote, LetGoItLeavesNoRankBehind) {
  pid_t rank = 0;
  {
    Zygote zygote(probe_spec());
    std::optional<StartedProcess> forked = zygote.fork_rank({{"WAIT_FOR_SIGNAL", "1"}});
    ASSERT_TRUE(forked);
    ASSERT_FALSE(first_line(forked->out_fd).empty());
    rank = forked->pid;
    close_descriptors(*forked);
  }
  EXPECT_TRUE(gone_within_patience(rank));
}

TEST(Zygote, OnlyProgramsWithTheStandbyHookQualify) {
  EXPECT_TRUE(fabric::launcher::has_standby_hook(kProbe));
  EXPECT_FALSE(fabric::launcher::has_standby_hook("/bin/sh"));
  // This test links the launcher's side, whose data holds the hook's variable names, but not
  // the hook: a zygote of it would run main() with no rank.
  EXPECT_FALSE(fabric::launcher::has_standby_hook("/proc/self/exe"));
  EXPECT_FALSE(fabric::launcher::has_standby_hook("/nonexistent/program"));
}

TEST(RankGroupFromZygote, EveryRankIsForkedAndReportsItsOwnLinesAndExit) {
  Zygote zygote(probe_spec());
  CollectingSink sink;
  ExitRecorder exits;
  RankGroupOptions options = probe_ranks(2, 0, nullptr);
  options.zygote = &zygote;
  options.ranks[1].env["EXIT_CODE"] = "4";
  {
    fabric::launcher::RankGroup group(std::move(options), sink, exits.callback());
    EXPECT_EQ(group.forked_ranks(), (std::vector<std::int32_t>{0, 1}));
    ASSERT_TRUE(exits.wait_for(2));
  }
  for (const int rank : {0, 1}) {
    const auto said = sink.value(rank, "main pid=");
    ASSERT_TRUE(said) << rank;
    EXPECT_NE(said->find(" rank=" + std::to_string(rank) + " "), std::string::npos) << *said;
    EXPECT_NE(said->find(" ppid=" + std::to_string(zygote.pid())), std::string::npos) << *said;
    EXPECT_EQ(sink.value(rank, "own_group="), kAsARankStarts.substr(std::string("own_group=").size()));
  }
  ASSERT_TRUE(exits.of(0) && exits.of(1));
  EXPECT_EQ(exits.of(0)->status, 0);
  EXPECT_EQ(exits.of(1)->status, 4);
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
