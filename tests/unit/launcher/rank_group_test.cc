// RankGroup over real /bin/sh processes: exit statuses, output lines, RAII kill, stop with
// a grace period, and resolve_program's SpawnErrors. Every wait is on a condition (a line
// a rank printed, an exit the callback reported) with a deadline, never a fixed sleep
// (processes this test did not start, a rank's children, are polled for with a deadline).

#include "ranks/rank_group.h"

#include <gtest/gtest.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <fstream>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "support/temp_dir.h"
#include "unit/launcher/rank_recorders.h"

namespace {

using fabric::launcher::LineSink;
using fabric::launcher::OutputLine;
using fabric::launcher::RankEnded;
using fabric::launcher::RankGroup;
using fabric::launcher::RankGroupOptions;
using fabric::launcher::RankProcess;
using fabric::launcher::resolve_program;
using fabric::launcher::SpawnError;
using fabric::testing::CollectingSink;
using fabric::testing::ExitRecorder;
using fabric::testing::kPatience;
using fabric::testing::ScopedTempDir;
using fabric::testing::write_file;
using namespace std::chrono_literals;

// `count` ranks of `/bin/sh -c script`, rank r with RANK=r and LOCAL_RANK=r plus `extra`.
RankGroupOptions shell(const std::string& script, int count, std::int32_t generation = 0,
                       std::map<std::string, std::string> extra = {}) {
  RankGroupOptions options{.program = "/bin/sh", .args = {"-c", script}, .generation = generation};
  for (int r = 0; r < count; ++r) {
    RankProcess rank{.rank = r, .local_rank = r};
    rank.env = extra;
    rank.env["PATH"] = "/usr/bin:/bin";
    rank.env["RANK"] = std::to_string(r);
    options.ranks.push_back(rank);
  }
  return options;
}

// Alive: it exists and is not a zombie (a killed grandchild may wait a while for init).
bool alive(pid_t pid) {
  if (::kill(pid, 0) != 0) return false;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string all;
  std::getline(stat, all);
  const auto close = all.rfind(')');
  return close == std::string::npos || close + 2 >= all.size() || all[close + 2] != 'Z';
}

// Waits (bounded) for a process this test did not start to be gone; its parent reaps it,
// so there is nothing to wait on but the process table.
bool gone_within_patience(pid_t pid) {
  const auto deadline = std::chrono::steady_clock::now() + kPatience;
  while (alive(pid)) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

TEST(RankGroup, ExitStatuses_AreTheExitCodeOr128PlusTheSignal) {
  CollectingSink sink;
  ExitRecorder recorder;
  RankGroup group(shell("case $RANK in 0) exit 0;; 1) exit 3;; 2) kill -KILL $$;; 3) kill -TERM $$;; esac", 4), sink,
                  recorder.callback());
  ASSERT_TRUE(recorder.wait_for(4)) << "not every rank exited";
  EXPECT_EQ(recorder.of(0)->status, 0);
  EXPECT_EQ(recorder.of(1)->status, 3);
  EXPECT_EQ(recorder.of(2)->status, 128 + SIGKILL);
  EXPECT_EQ(recorder.of(3)->status, 128 + SIGTERM);
  EXPECT_FALSE(recorder.of(1)->signaled());
  EXPECT_TRUE(recorder.of(2)->signaled());
  EXPECT_EQ(group.status(1), 3);
  EXPECT_EQ(group.status(2), 128 + SIGKILL);
  EXPECT_EQ(group.status(42), std::nullopt);
  EXPECT_TRUE(group.all_exited());
  EXPECT_TRUE(group.running().empty());
}

TEST(RankGroup, OutputLines_ReachTheSinkTaggedWithRankLocalRankAndGeneration) {
  CollectingSink sink;
  ExitRecorder recorder;
  RankGroupOptions options = shell("echo \"out $RANK\"; echo \"err $RANK\" >&2; printf 'no newline'", 0, 4);
  options.ranks = {RankProcess{.rank = 5, .local_rank = 0, .env = {{"RANK", "5"}}},
                   RankProcess{.rank = 6, .local_rank = 1, .env = {{"RANK", "6"}}}};
  RankGroup group(options, sink, recorder.callback());
  ASSERT_TRUE(recorder.wait_for(2));
  // A rank's last lines reach the sink before its exit is reported.
  for (const auto& [rank, local_rank] : {std::pair{5, 0}, std::pair{6, 1}}) {
    const auto lines = sink.of(rank);
    ASSERT_EQ(lines.size(), 3u) << "rank " << rank;
    std::map<std::string, bool> seen;  // text -> is_stderr
    for (const auto& line : lines) {
      EXPECT_EQ(line.local_rank, local_rank);
      EXPECT_EQ(line.generation, 4);
      seen[line.text] = line.is_stderr;
    }
    const std::string r = std::to_string(rank);
    ASSERT_TRUE(seen.contains("out " + r));
    ASSERT_TRUE(seen.contains("err " + r));
    ASSERT_TRUE(seen.contains("no newline"));  // a last line without its newline still counts
    EXPECT_FALSE(seen["out " + r]);
    EXPECT_TRUE(seen["err " + r]);
    EXPECT_FALSE(seen["no newline"]);
    EXPECT_EQ(recorder.of(rank)->generation, 4);
    EXPECT_EQ(recorder.of(rank)->local_rank, local_rank);
  }
}

TEST(RankGroup, RanksGetExactlyTheGivenEnvironment_NotTheLaunchers) {
  ASSERT_EQ(::setenv("FABRIC_TEST_LAUNCHER_ONLY", "leaked", 1), 0);
  CollectingSink sink;
  ExitRecorder recorder;
  {
    RankGroup group(shell("echo \"leak=${FABRIC_TEST_LAUNCHER_ONLY-unset}\"; echo \"given=$GIVEN\"", 1, 0,
                          {{"GIVEN", "a value with spaces"}}),
                    sink, recorder.callback());
    ASSERT_TRUE(recorder.wait_for(1));
  }
  ::unsetenv("FABRIC_TEST_LAUNCHER_ONLY");
  EXPECT_EQ(sink.value(0, "leak="), "unset");
  EXPECT_EQ(sink.value(0, "given="), "a value with spaces");
}

TEST(RankGroup, RanksRunInTheWorkingDir) {
  ScopedTempDir dir;
  char* real = ::realpath(dir.path().c_str(), nullptr);
  ASSERT_NE(real, nullptr);
  const std::string expected = real;
  ::free(real);
  CollectingSink sink;
  ExitRecorder recorder;
  RankGroupOptions options = shell("echo \"cwd=$(pwd -P)\"", 1);
  options.working_dir = dir.path();
  RankGroup group(options, sink, recorder.callback());
  ASSERT_TRUE(recorder.wait_for(1));
  EXPECT_EQ(sink.value(0, "cwd="), expected);
  EXPECT_EQ(group.status(0), 0);
}

TEST(RankGroup, ExitCallback_SeesTheGroupsStateAlreadyUpdated) {
  CollectingSink sink;
  std::mutex mutex;  // held while the group is built, so a callback never sees it half made
  std::optional<RankGroup> group;
  std::vector<std::string> problems;
  int calls = 0;
  bool last_saw_all_exited = false;
  std::condition_variable done;
  {
    std::lock_guard lock(mutex);
    group.emplace(shell("exit $((RANK + 10))", 3), sink, [&](const RankEnded& ended) {
      std::lock_guard callback_lock(mutex);
      if (group->status(ended.rank) != ended.status) problems.push_back("status of rank " + std::to_string(ended.rank));
      for (const std::int32_t running : group->running()) {
        if (running == ended.rank) problems.push_back("rank " + std::to_string(ended.rank) + " still running");
      }
      ++calls;
      last_saw_all_exited = group->all_exited();
      done.notify_all();
    });
  }
  {
    std::unique_lock lock(mutex);
    ASSERT_TRUE(done.wait_for(lock, kPatience, [&] { return calls == 3; }));
    EXPECT_TRUE(problems.empty()) << problems.front();
    // The callbacks are serialised by `mutex`, so the last one ran after every status was set.
    EXPECT_TRUE(last_saw_all_exited);
  }
  group.reset();
}

TEST(RankGroup, Destructor_KillsRanksStillRunning_AndTheirChildren) {
  CollectingSink sink;
  ExitRecorder recorder;
  std::vector<pid_t> pids;
  {
    RankGroup group(shell("/bin/sleep 1000 & echo \"child=$!\"; echo \"self=$$\"; wait", 2), sink,
                    recorder.callback());
    ASSERT_TRUE(sink.wait_for([](const OutputLine& line) { return line.text.rfind("self=", 0) == 0; }, 2));
    ASSERT_TRUE(sink.wait_for([](const OutputLine& line) { return line.text.rfind("child=", 0) == 0; }, 2));
    for (std::int32_t rank = 0; rank < 2; ++rank) {
      pids.push_back(std::stoi(*sink.value(rank, "self=")));
      pids.push_back(std::stoi(*sink.value(rank, "child=")));
    }
    for (const pid_t pid : pids) ASSERT_TRUE(alive(pid)) << pid;
    EXPECT_EQ(group.running().size(), 2u);
    EXPECT_FALSE(group.all_exited());
  }
  // The ranks themselves were reaped by the destructor; their children die with the group.
  for (const pid_t pid : pids) EXPECT_TRUE(gone_within_patience(pid)) << "process " << pid << " survived the group";
  ASSERT_EQ(recorder.exits().size(), 2u);  // every exit was reported before the destructor returned
  for (const auto& ended : recorder.exits()) EXPECT_EQ(ended.status, 128 + SIGKILL);
}

TEST(RankGroup, Destructor_KillsWhatAnExitedRankLeftRunningInItsProcessGroup) {
  CollectingSink sink;
  ExitRecorder recorder;
  auto group =
      std::make_unique<RankGroup>(shell("/bin/sleep 1000 & echo \"child=$!\"; exit 0", 1), sink, recorder.callback());
  ASSERT_TRUE(recorder.wait_for(1));  // the rank is gone; the sleep it started, in its group, is not
  const auto child = sink.value(0, "child=");
  ASSERT_TRUE(child.has_value());
  const pid_t pid = std::stoi(*child);
  auto destroyed = std::async(std::launch::async, [&] { group.reset(); });
  const bool returned = destroyed.wait_for(kPatience) == std::future_status::ready;
  const bool killed_by_the_group = returned && gone_within_patience(pid);
  ::kill(pid, SIGKILL);  // the test's own cleanup, whatever the outcome
  destroyed.wait();
  EXPECT_TRUE(returned) << "~RankGroup blocked on the output of process " << pid << ", left in the rank's group";
  EXPECT_TRUE(killed_by_the_group) << "process " << pid << " in the rank's process group survived ~RankGroup";
}

TEST(RankGroup, Destructor_ReturnsEvenWhenAProcessThatLeftTheGroupHoldsTheOutputPipes) {
  CollectingSink sink;
  ExitRecorder recorder;
  auto group = std::make_unique<RankGroup>(
      shell("/usr/bin/setsid /bin/sleep 1000 & echo \"escaped=$!\"; exit 0", 1), sink, recorder.callback());
  ASSERT_TRUE(recorder.wait_for(1));  // the rank itself is gone; its escaped child is not
  const auto escaped = sink.value(0, "escaped=");
  ASSERT_TRUE(escaped.has_value());
  const pid_t pid = std::stoi(*escaped);
  auto destroyed = std::async(std::launch::async, [&] { group.reset(); });
  const bool returned = destroyed.wait_for(kPatience) == std::future_status::ready;
  ::kill(pid, SIGKILL);  // the test's own cleanup, whatever the outcome
  destroyed.wait();
  EXPECT_TRUE(returned) << "~RankGroup blocked until process " << pid << " (in a session of its own) closed its "
                        << "copy of the rank's stdout/stderr";
}

TEST(RankGroup, Stop_SendsTermThenKill_ToARankThatIgnoresTerm) {
  CollectingSink sink;
  ExitRecorder recorder;
  // Rank 0 ignores SIGTERM (and so does the sleep it becomes); rank 1 dies of it.
  RankGroup group(shell("if [ $RANK = 0 ]; then trap '' TERM; fi; echo ready; exec /bin/sleep 1000", 2), sink,
                  recorder.callback());
  ASSERT_TRUE(sink.wait_for_text("ready", 2));
  EXPECT_FALSE(group.stop(200ms)) << "the grace cannot have sufficed for a rank that ignores SIGTERM";
  EXPECT_TRUE(group.all_exited());
  EXPECT_EQ(group.status(0), 128 + SIGKILL);
  EXPECT_EQ(group.status(1), 128 + SIGTERM);
}

TEST(RankGroup, Stop_WithinTheGrace_LetsARankExitItsOwnWay) {
  CollectingSink sink;
  ExitRecorder recorder;
  // Checkpoints on SIGTERM: says so and exits 7. The long grace is never waited out.
  // "ready" comes once the sleep exists, so the SIGTERM to the group reaches it too.
  RankGroup group(shell("trap 'echo checkpointed; exit 7' TERM; /bin/sleep 1000 & echo ready; wait", 1), sink,
                  recorder.callback());
  ASSERT_TRUE(sink.wait_for_text("ready"));
  EXPECT_TRUE(group.stop(10min));
  EXPECT_EQ(group.status(0), 7);
  EXPECT_TRUE(sink.wait_for_text("checkpointed"));
}

TEST(RankGroup, Kill_FromAnotherThread_CutsALongGraceShort) {
  CollectingSink sink;
  ExitRecorder recorder;
  // Traps TERM (says so) and keeps running.
  RankGroup group(shell("trap 'echo term' TERM; echo ready; while :; do /bin/sleep 0.05; done", 1), sink,
                  recorder.callback());
  ASSERT_TRUE(sink.wait_for_text("ready"));
  auto stopped = std::async(std::launch::async, [&] { return group.stop(10min); });
  ASSERT_TRUE(sink.wait_for_text("term")) << "stop() never sent SIGTERM";
  group.kill();
  ASSERT_EQ(stopped.wait_for(kPatience), std::future_status::ready) << "kill() did not cut the grace short";
  stopped.get();  // true or false: which one a kill() in mid-grace gives depends on thread timing
  EXPECT_EQ(group.status(0), 128 + SIGKILL);
}

TEST(RankGroup, SignalRank_SignalsOnlyThatRank) {
  CollectingSink sink;
  ExitRecorder recorder;
  RankGroup group(shell("echo ready; exec /bin/sleep 1000", 2), sink, recorder.callback());
  ASSERT_TRUE(sink.wait_for_text("ready", 2));
  group.signal_rank(1, SIGUSR1);
  ASSERT_TRUE(recorder.wait_for(1));
  EXPECT_EQ(recorder.exits().front().rank, 1);
  EXPECT_EQ(group.status(1), 128 + SIGUSR1);
  EXPECT_EQ(group.status(0), std::nullopt);
  EXPECT_EQ(group.running(), std::vector<std::int32_t>{0});
  group.signal_all(SIGUSR2);
  ASSERT_TRUE(recorder.wait_for(2));
  EXPECT_EQ(group.status(0), 128 + SIGUSR2);
}

TEST(RankGroup, RanksGetStopSignals_EvenWhenTheLauncherBlocksThem) {
  CollectingSink sink;
  ExitRecorder recorder;
  sigset_t term, previous;
  sigemptyset(&term);
  sigaddset(&term, SIGTERM);
  ASSERT_EQ(::pthread_sigmask(SIG_BLOCK, &term, &previous), 0);
  std::optional<RankGroup> group;
  try {
    group.emplace(shell("echo ready; exec /bin/sleep 1000", 1), sink, recorder.callback());
  } catch (...) {
    ::pthread_sigmask(SIG_SETMASK, &previous, nullptr);
    throw;
  }
  ::pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  ASSERT_TRUE(sink.wait_for_text("ready"));
  group->signal_all(SIGTERM);
  ASSERT_TRUE(recorder.wait_for(1));
  EXPECT_EQ(group->status(0), 128 + SIGTERM);
}

TEST(RankGroup, ProgramThatCannotStart_ThrowsSpawnError) {
  CollectingSink sink;
  ExitRecorder recorder;
  RankGroupOptions options = shell("exit 0", 2);
  options.program = "/nonexistent/fabric-test-program";
  EXPECT_THROW({ RankGroup group(options, sink, recorder.callback()); }, SpawnError);
  EXPECT_TRUE(recorder.exits().empty());
}

TEST(RankGroup, ProgramThatCannotStart_LeavesNoZombieBehind) {
  CollectingSink sink;
  ExitRecorder recorder;
  RankGroupOptions options = shell("exit 0", 1);
  options.program = "/nonexistent/fabric-test-program";
  EXPECT_THROW({ RankGroup group(options, sink, recorder.callback()); }, SpawnError);
  // Every group of the earlier tests is gone and reaped: a child left now is the failed spawn.
  const auto deadline = std::chrono::steady_clock::now() + kPatience;
  for (;;) {
    int status = 0;
    const pid_t reaped = ::waitpid(-1, &status, WNOHANG);
    ASSERT_LE(reaped, 0) << "process " << reaped << " (the failed spawn) was left for the launcher to reap";
    if (reaped < 0 || std::chrono::steady_clock::now() > deadline) break;  // no children at all: none leaked
    std::this_thread::sleep_for(5ms);
  }
}

TEST(ResolveProgram, EmptyProgram_Is127) {
  try {
    resolve_program("", "", "/bin");
    FAIL() << "no SpawnError";
  } catch (const SpawnError& error) {
    EXPECT_EQ(error.status(), 127);
  }
}

TEST(ResolveProgram, MissingPath_Is127AndNamesIt) {
  try {
    resolve_program("/nonexistent/train", "", "/bin");
    FAIL() << "no SpawnError";
  } catch (const SpawnError& error) {
    EXPECT_EQ(error.status(), 127);
    EXPECT_NE(std::string(error.what()).find("/nonexistent/train"), std::string::npos) << error.what();
  }
}

TEST(ResolveProgram, FileThatIsNotExecutable_Is126) {
  ScopedTempDir dir;
  write_file(dir / "train.sh", "#!/bin/sh\n");
  ASSERT_EQ(::chmod((dir / "train.sh").c_str(), 0644), 0);
  try {
    resolve_program(dir / "train.sh", "", "/bin");
    FAIL() << "no SpawnError";
  } catch (const SpawnError& error) {
    EXPECT_EQ(error.status(), 126);
    EXPECT_NE(std::string(error.what()).find("not executable"), std::string::npos) << error.what();
  }
}

TEST(ResolveProgram, NameWithoutSlash_IsLookedUpInPath) {
  EXPECT_EQ(resolve_program("sh", "/somewhere/else", "/nonexistent-dir:/bin"), "/bin/sh");
  try {
    resolve_program("fabric-no-such-program", "", "/bin:/usr/bin");
    FAIL() << "no SpawnError";
  } catch (const SpawnError& error) {
    EXPECT_EQ(error.status(), 127);
    EXPECT_NE(std::string(error.what()).find("not found in PATH"), std::string::npos) << error.what();
  }
}

TEST(ResolveProgram, PathLookup_SkipsEntriesThatAreNotExecutable) {
  ScopedTempDir dir;
  ASSERT_EQ(::mkdir((dir / "first").c_str(), 0755), 0);
  ASSERT_EQ(::mkdir((dir / "second").c_str(), 0755), 0);
  write_file(dir / "first/tool", "#!/bin/sh\n");
  write_file(dir / "second/tool", "#!/bin/sh\n");
  ASSERT_EQ(::chmod((dir / "first/tool").c_str(), 0644), 0);
  ASSERT_EQ(::chmod((dir / "second/tool").c_str(), 0755), 0);
  EXPECT_EQ(resolve_program("tool", "", (dir / "first") + ":" + (dir / "second")), dir / "second/tool");
}

TEST(ResolveProgram, RelativePath_IsResolvedAgainstTheWorkingDir) {
  ScopedTempDir dir;
  ASSERT_EQ(::mkdir((dir / "bin").c_str(), 0755), 0);
  write_file(dir / "bin/train.sh", "#!/bin/sh\n");
  ASSERT_EQ(::chmod((dir / "bin/train.sh").c_str(), 0755), 0);
  EXPECT_EQ(resolve_program("bin/train.sh", dir.path(), "/bin"), dir.path() + "/bin/train.sh");
  // An absolute path ignores the working dir.
  EXPECT_EQ(resolve_program("/bin/sh", dir.path(), ""), "/bin/sh");
}

TEST(RankGroup, ResolvedRelativeProgram_RunsInItsWorkingDir) {
  ScopedTempDir dir;
  write_file(dir / "hello.sh", "#!/bin/sh\necho \"hello from $RANK\"\n");
  ASSERT_EQ(::chmod((dir / "hello.sh").c_str(), 0755), 0);
  CollectingSink sink;
  ExitRecorder recorder;
  RankGroupOptions options = shell("", 1);
  options.args.clear();
  options.working_dir = dir.path();
  options.program = resolve_program("./hello.sh", options.working_dir, "");
  RankGroup group(options, sink, recorder.callback());
  ASSERT_TRUE(recorder.wait_for(1));
  EXPECT_EQ(group.status(0), 0);
  EXPECT_EQ(sink.value(0, "hello from "), "0");
}

}  // namespace
