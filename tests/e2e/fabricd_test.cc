// fabricd run end to end, with real programs: training to accuracy under 4 ranks, a rank
// killed with SIGKILL (restart, or the job's status with the rank named), a rank that hangs
// (an endless loop, SIGSTOP) found within the heartbeat timeout + 1 s, an uncaught
// exception reported in the summary, a rendezvous that times out, two jobs side by side,
// SIGINT to fabricd, fabricd itself killed with SIGKILL (no rank survives it), and the
// errors for bad invocations.
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <future>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "support/network_lab.h"  // Daemon
#include "support/processes.h"
#include "support/temp_dir.h"

namespace fabric {
namespace {

using testing::CommandResult;
using testing::run_command;
using testing::TimedLine;

const std::string kFabricd = FABRICD;

// A hung rank (spinning, or stopped by SIGSTOP) must be declared hung within
// --heartbeat-timeout + 1 s of the moment it stopped making progress.
class HungRank : public ::testing::TestWithParam<std::string> {};

TEST_P(HungRank, IsDetectedWithinTheHeartbeatTimeoutPlusOneSecondAndNamed) {
  CommandResult result = run_command(kFabricd + " run --nproc-per-node 2 --max-restarts 0 --heartbeat-timeout 2 " +
                                 DDP_WORKER + " misbehave " + GetParam());
  EXPECT_EQ(result.status, 128 + SIGKILL) << result.output;
  const TimedLine* hung_at = result.find_line("misbehaving at ");
  const TimedLine* declared = result.find_line("fabricd: rank 1 hung");
  ASSERT_TRUE(hung_at && declared) << result.output;
  const std::int64_t stopped = std::stoll(hung_at->text.substr(hung_at->text.find(" at ") + 4));
  const std::int64_t latency = declared->at_ms - stopped;
  std::cout << GetParam() << ": hang declared " << latency << " ms after it began (timeout 2000 ms)\n";
  // Not much before the timeout either: a rank frozen whole is judged from its last
  // heartbeat, one interval (timeout / 4) before it froze, or a little more when its
  // heartbeat thread is starved of CPU (ctest runs tests side by side on 2 cores).
  EXPECT_GE(latency, 1000) << "declared hung long before the timeout ran out";
  EXPECT_LE(latency, 3000) << result.output;
  EXPECT_NE(result.output.find("job failed: rank 1 failed first, with signal 9"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("hung: no progress for"), std::string::npos) << result.output;
}

INSTANTIATE_TEST_SUITE_P(Ways, HungRank, ::testing::Values("spin", "stop"));

TEST(FabricdRun, HungRankRestartsTheGroupAndTheJobCompletes) {
  CommandResult result = run_command(kFabricd + " run --nproc-per-node 2 --max-restarts 1 --heartbeat-timeout 2 " + DDP_WORKER +
                      " misbehave spin");
  EXPECT_EQ(result.status, 0) << result.output;
  EXPECT_NE(result.output.find("rank 1 hung"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("[rank 1] generation 1 done"), std::string::npos) << result.output;
}

TEST(FabricdRun, UncaughtExceptionIsReportedInTheSummary) {
  CommandResult result = run_command(kFabricd + " run --nproc-per-node 2 --max-restarts 0 " + DDP_WORKER + " misbehave throw");
  EXPECT_EQ(result.status, 128 + SIGABRT) << result.output;
  EXPECT_NE(result.output.find("job failed: rank 1 failed first, with signal 6"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("it reported std::runtime_error: injected failure at step 5"), std::string::npos)
      << result.output;
  EXPECT_NE(result.output.find("at step 5"), std::string::npos) << result.output;
}

TEST(FabricdRun, RendezvousThatTimesOutEndsTheJobWithStatus3AndTheMissingRank) {
  const auto started = std::chrono::steady_clock::now();
  CommandResult result = run_command(kFabricd + " run --nproc-per-node 2 --rdzv-timeout 1 --grace-period 1 " + DDP_WORKER +
                      " late-join");
  const auto took = std::chrono::steady_clock::now() - started;
  EXPECT_EQ(result.status, 3) << result.output;
  EXPECT_NE(result.output.find("rendezvous timed out after 1.0 s: rank(s) 1 never joined"), std::string::npos)
      << result.output;
  EXPECT_LT(took, std::chrono::seconds(20)) << "the sleeping rank was not stopped";
}

TEST(FabricdRun, TwoJobsAtOnceDoNotInterfere) {
  const std::string base = "/tmp/fabricd-e2e-two-" + std::to_string(::getpid());
  run_command("rm -rf " + base + " && mkdir -p " + base + "/a " + base + "/b");
  auto job = [&](const std::string& dir) {
    return run_command(kFabricd + " run --nproc-per-node 2 " + DDP_WORKER + " fabric-collectives " + dir + " && " + kFabricd +
               " run --nproc-per-node 2 --max-restarts 1 " + DDP_WORKER + " flaky");
  };
  auto first = std::async(std::launch::async, job, base + "/a");
  auto second = std::async(std::launch::async, job, base + "/b");
  CommandResult a = first.get(), b = second.get();
  EXPECT_EQ(a.status, 0) << a.output;
  EXPECT_EQ(b.status, 0) << b.output;
  run_command("rm -rf " + base);
}

TEST(FabricdRun, SigintStopsTheJobAndASecondSigintKillsAtOnce) {
  // Ranks that ignore SIGTERM: only the grace period (60 s) or a second SIGINT ends them.
  std::string program = kFabricd, verb = "run", flag = "--nproc-per-node", n = "2", grace = "--grace-period",
              grace_seconds = "60", shell = "/bin/sh", dash_c = "-c", script = "trap '' TERM; echo up; sleep 120";
  std::vector<char*> argv{program.data(), verb.data(), flag.data(),  n.data(),      grace.data(),
                          grace_seconds.data(), shell.data(), dash_c.data(), script.data(), nullptr};
  int out[2];
  ASSERT_EQ(::pipe(out), 0);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], STDERR_FILENO);
  posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
  pid_t fabricd = 0;
  ASSERT_EQ(::posix_spawn(&fabricd, program.c_str(), &actions, nullptr, argv.data(), environ), 0);
  posix_spawn_file_actions_destroy(&actions);
  ::close(out[1]);
  std::unique_ptr<FILE, decltype(&fclose)> output(fdopen(out[0], "r"), &fclose);
  char buffer[4096];
  for (int up = 0; up < 2 && fgets(buffer, sizeof(buffer), output.get());) {
    up += std::string(buffer).find("up") != std::string::npos;  // both ranks are running
  }

  ::kill(fabricd, SIGINT);
  ASSERT_TRUE(fgets(buffer, sizeof(buffer), output.get()));
  EXPECT_NE(std::string(buffer).find("stopping the job (signal 2)"), std::string::npos) << buffer;
  int status = 0;
  EXPECT_EQ(::waitpid(fabricd, &status, WNOHANG), 0) << "fabricd must wait out the grace period for its ranks";

  const auto second = std::chrono::steady_clock::now();
  ::kill(fabricd, SIGINT);
  ASSERT_EQ(::waitpid(fabricd, &status, 0), fabricd);
  EXPECT_LT(std::chrono::steady_clock::now() - second, std::chrono::seconds(2));
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 128 + SIGINT) << status;
}

TEST(FabricdRun, DigitsTrainsToAccuracyWithFourRanks) {
  CommandResult result = run_command(kFabricd + " run --nproc-per-node 4 " + DIGITS + " --accelerator cpu --require-accuracy 0.95 "
                      "--log-dir /tmp/fabricd-e2e-logs-" + std::to_string(::getpid()));
  EXPECT_EQ(result.status, 0) << result.output;
  EXPECT_NE(result.output.find("[rank 0] final test accuracy"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("world size 4"), std::string::npos) << result.output;
}

TEST(FabricdRun, KilledRankRestartsTheGroupAndTheJobCompletes) {
  CommandResult result = run_command(kFabricd + " run --nproc-per-node 2 --max-restarts 1 " + DDP_WORKER + " flaky");
  EXPECT_EQ(result.status, 0) << result.output;
  EXPECT_NE(result.output.find("rank 1 failed with signal 9"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("restarting the job: generation 1"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("[rank 0] generation 1 done"), std::string::npos) << result.output;
}

// With --warm-standby, every generation's ranks are forks of one zygote, which loaded the
// program once: each rank's parent is the zygote fabricd named, and generation 1 gets its
// restart variables. The zygote never ran main() itself: had it, it would have run the
// worker alone, as a job of one rank, and printed "generation 0 done".
TEST(FabricdRun, WarmStandbyForksEveryGenerationFromOneZygoteThatNeverRunsMain) {
  CommandResult result =
      run_command(kFabricd + " run --nproc-per-node 2 --max-restarts 1 --warm-standby " + DDP_WORKER + " flaky");
  EXPECT_EQ(result.status, 0) << result.output;
  const std::string forked = "ranks forked from a zygote of the program (pid ";
  const auto said = result.output.find(forked);
  ASSERT_NE(said, std::string::npos) << result.output;
  const std::string zygote = std::to_string(std::stol(result.output.substr(said + forked.size())));
  for (const int generation : {0, 1}) {
    for (const int rank : {0, 1}) {
      const std::string line = "[rank " + std::to_string(rank) + "] generation " + std::to_string(generation) + " pid ";
      const auto at = result.output.find(line);
      ASSERT_NE(at, std::string::npos) << line << "\n" << result.output;
      const std::string rest = result.output.substr(at, result.output.find('\n', at) - at);
      EXPECT_NE(rest.find(" ppid " + zygote), std::string::npos) << rest;
    }
  }
  EXPECT_NE(result.output.find("[rank 0] generation 1 done"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("[rank 1] generation 1 done"), std::string::npos) << result.output;
  EXPECT_EQ(result.output.find("generation 0 done"), std::string::npos) << result.output;
}

// A program that must not be forked (FABRICD_NO_ZYGOTE=1) gets warm standbys instead: the
// restarted generation's ranks are the standbys fabricd started while generation 0 ran (the
// same processes, their pids), given generation 1's environment, none of which ran main()
// before it.
TEST(FabricdRun, WithoutAZygoteTheRestartedRanksAreWarmStandbys) {
  CommandResult result = run_command(kFabricd + " run --nproc-per-node 2 --max-restarts 1 --warm-standby --env " +
                                     "FABRICD_NO_ZYGOTE=1 " + DDP_WORKER + " flaky after-standbys");
  EXPECT_EQ(result.status, 0) << result.output;
  EXPECT_NE(result.output.find("no zygote (the job's environment sets FABRICD_NO_ZYGOTE=1)"), std::string::npos)
      << result.output;
  const std::string standbys = "generation 1: 2 of 2 ranks were warm standbys (pids ";
  const auto said = result.output.find(standbys);
  ASSERT_NE(said, std::string::npos) << result.output;
  std::istringstream pids(result.output.substr(said + standbys.size()));
  pid_t first = 0, second = 0;
  char comma = 0;
  ASSERT_TRUE(pids >> first >> comma >> second) << result.output;
  for (const auto& [rank, pid] : {std::pair{0, first}, std::pair{1, second}}) {
    EXPECT_NE(result.output.find("[rank " + std::to_string(rank) + "] generation 1 pid " + std::to_string(pid)),
              std::string::npos)
        << result.output;
    EXPECT_NE(result.output.find("[rank " + std::to_string(rank) + "] generation 1 done"), std::string::npos)
        << result.output;
  }
  EXPECT_EQ(result.output.find("generation 0 done"), std::string::npos) << result.output;
}

// A program without libfabric would not wait as a zygote or standby: it is run as always.
TEST(FabricdRun, WarmStandbyOfAProgramWithoutLibfabricIsSaidAndRunsAsUsual) {
  CommandResult result = run_command(kFabricd + " run --nproc-per-node 2 --max-restarts 1 --warm-standby " +
                                     "/bin/sh -c 'echo rank $RANK'");
  EXPECT_EQ(result.status, 0) << result.output;
  EXPECT_NE(result.output.find("is not linked with libfabric (it has no standby hook)"), std::string::npos)
      << result.output;
  EXPECT_NE(result.output.find("[rank 0] rank 0"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("[rank 1] rank 1"), std::string::npos) << result.output;
}

TEST(FabricdRun, WithoutRestartsTheJobEndsWithTheRanksStatusAndNamesIt) {
  CommandResult result = run_command(kFabricd + " run --nproc-per-node 2 --max-restarts 0 " + DDP_WORKER + " flaky");
  EXPECT_EQ(result.status, 128 + SIGKILL) << result.output;
  EXPECT_NE(result.output.find("job failed: rank 1 failed first, with signal 9"), std::string::npos) << result.output;
}

TEST(FabricdRun, KilledFabricdLeavesNoRankBehind) {
  const std::string marker = "61." + std::to_string(::getpid());  // a unique `sleep` argument
  std::string program = kFabricd, verb = "run", flag = "--nproc-per-node", n = "3", sleep = "sleep", seconds = marker;
  std::vector<char*> argv{program.data(), verb.data(), flag.data(), n.data(), sleep.data(), seconds.data(), nullptr};
  pid_t fabricd = 0;
  ASSERT_EQ(::posix_spawn(&fabricd, program.c_str(), nullptr, nullptr, argv.data(), environ), 0);
  // The ranks run as /usr/bin/sleep (fabricd resolves PATH); fabricd's own command line
  // does not start with a path ending in sleep, nor does the shell's running pgrep.
  const std::string count = "pgrep -fc '^/[a-z/]*sleep " + marker + "$'";
  // Wait (bounded) until all three ranks run, so that the kill hits a running job.
  for (auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
       run_command(count).output != "3\n" && std::chrono::steady_clock::now() < deadline;) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_EQ(run_command(count).output, "3\n");
  ::kill(fabricd, SIGKILL);
  ::waitpid(fabricd, nullptr, 0);
  const auto killed = std::chrono::steady_clock::now();
  while (run_command(count).output != "0\n" && std::chrono::steady_clock::now() - killed < std::chrono::seconds(1)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(run_command(count).output, "0\n") << "ranks outlived fabricd by more than a second";
}

TEST(FabricdRun, RedirectAndTeeRouteEachStreamAsTorchrunDoes) {
  const std::string dir = "/tmp/fabricd-e2e-streams-" + std::to_string(::getpid());
  const std::string program = " /bin/sh -c 'echo to-out; echo to-err >&2'";
  run_command("rm -rf " + dir);
  // --redirect stdout: stdout only in the files; stderr only on the console.
  CommandResult redirected = run_command(kFabricd + " run --nproc-per-node 2 --log-dir " + dir + " --redirect stdout" + program);
  EXPECT_EQ(redirected.status, 0) << redirected.output;
  EXPECT_EQ(redirected.output.find("to-out"), std::string::npos) << redirected.output;
  EXPECT_NE(redirected.output.find("[rank 1] to-err"), std::string::npos) << redirected.output;
  EXPECT_EQ(run_command("cat " + dir + "/rank_1.stdout.log").output, "to-out\n");
  EXPECT_NE(run_command("test -e " + dir + "/rank_1.stderr.log").status, 0) << "stderr was neither redirected nor teed";
  // --tee stderr: stderr on the console and in the files; stdout on the console only.
  run_command("rm -rf " + dir);
  CommandResult teed = run_command(kFabricd + " run --nproc-per-node 2 --log-dir " + dir + " --tee 2" + program);
  EXPECT_NE(teed.output.find("[rank 0] to-out"), std::string::npos) << teed.output;
  EXPECT_NE(teed.output.find("[rank 0] to-err"), std::string::npos) << teed.output;
  EXPECT_EQ(run_command("cat " + dir + "/rank_0.stderr.log").output, "to-err\n");
  EXPECT_NE(run_command("test -e " + dir + "/rank_0.stdout.log").status, 0);
  run_command("rm -rf " + dir);
  CommandResult without_dir = run_command(kFabricd + " run --redirect 3" + program);
  EXPECT_EQ(without_dir.status, 2) << without_dir.output;
  EXPECT_NE(without_dir.output.find("add --log-dir"), std::string::npos) << without_dir.output;
}

TEST(FabricdRun, BadInvocationsGiveOneLineAndADistinctCode) {
  CommandResult missing = run_command(kFabricd + " run /no/such/program");
  EXPECT_EQ(missing.status, 127) << missing.output;
  EXPECT_NE(missing.output.find("does not exist"), std::string::npos) << missing.output;
  const std::string text_file = "/tmp/fabricd-e2e-" + std::to_string(::getpid());
  run_command("printf 'not a program' > " + text_file + " && chmod 644 " + text_file);
  CommandResult not_executable = run_command(kFabricd + " run " + text_file);
  EXPECT_EQ(not_executable.status, 126) << not_executable.output;
  run_command("chmod 755 " + text_file);  // executable, but not a format the kernel runs
  CommandResult cannot_start = run_command(kFabricd + " run --nproc-per-node 2 " + text_file);
  EXPECT_EQ(cannot_start.status, 126) << cannot_start.output;
  EXPECT_NE(cannot_start.output.find("cannot start"), std::string::npos) << cannot_start.output;
  ::unlink(text_file.c_str());
  CommandResult bad_flag = run_command(kFabricd + " run --nproc-per-node zero /bin/true");
  EXPECT_EQ(bad_flag.status, 2) << bad_flag.output;
  CommandResult help = run_command(kFabricd + " run --help");
  EXPECT_EQ(help.status, 0);
  EXPECT_NE(help.output.find("--max-restarts"), std::string::npos) << help.output;
}

// Found when tried as a new user would: torchrun's `--` before the program, a repeated
// --env that must not swallow the program, --version, and the variables torchrun sets that
// programs read to resume after a restart.
TEST(FabricdRun, TakesTorchrunsSeparatorAndEnvFlagsWithoutSwallowingTheProgram) {
  CommandResult separated = run_command(kFabricd + " run --nproc-per-node 1 -- /bin/sh -c 'echo hi'");
  EXPECT_EQ(separated.status, 0) << separated.output;
  EXPECT_NE(separated.output.find("[rank 0] hi"), std::string::npos) << separated.output;
  CommandResult env = run_command(kFabricd + " run --env A=B --env C=D /bin/sh -c 'echo $A$C'");
  EXPECT_EQ(env.status, 0) << env.output;
  EXPECT_NE(env.output.find("[rank 0] BD"), std::string::npos) << env.output;
  // A `--` after the program is the program's own.
  CommandResult own = run_command(kFabricd + " run /bin/sh -c 'echo \"$0 $1\"' -- x");
  EXPECT_NE(own.output.find("[rank 0] -- x"), std::string::npos) << own.output;
  CommandResult version = run_command(kFabricd + " --version");
  EXPECT_EQ(version.status, 0);
  EXPECT_EQ(version.output.rfind("fabricd ", 0), 0u) << version.output;
}

TEST(FabricdRun, GivesTheRanksTorchrunsRestartVariables) {
  CommandResult result = run_command(
      kFabricd + " run --nproc-per-node 2 --max-restarts 3 /bin/sh -c 'echo $RANK:$TORCHELASTIC_RUN_ID:"
                 "$TORCHELASTIC_RESTART_COUNT:$TORCHELASTIC_MAX_RESTARTS:$GROUP_WORLD_SIZE:$ROLE_RANK:"
                 "$ROLE_WORLD_SIZE:$FABRICD_JOB_ID'");
  ASSERT_EQ(result.status, 0) << result.output;
  const auto line = result.output.find("[rank 1] 1:local-");
  ASSERT_NE(line, std::string::npos) << result.output;
  const std::string fields = result.output.substr(line + 9, result.output.find('\n', line) - line - 9);
  // RANK:RUN_ID:RESTART_COUNT:MAX_RESTARTS:GROUP_WORLD_SIZE:ROLE_RANK:ROLE_WORLD_SIZE:JOB_ID
  const std::string run_id = fields.substr(2, fields.find(':', 2) - 2);
  EXPECT_EQ(fields, "1:" + run_id + ":0:3:1:1:2:" + run_id);
}

// Each rank's intra-op threads: the node's CPUs divided among its ranks, unless the user
// chose. taskset gives fabricd two CPUs on any machine, where LibTorch alone would start two
// threads in every rank.
TEST(FabricdRun, RanksShareTheCpusUnlessTheUserSetOmpNumThreads) {
  const std::string two_cpus = "env -u OMP_NUM_THREADS taskset -c 0,1 " + kFabricd;
  const std::string echo = " /bin/sh -c 'echo threads=$OMP_NUM_THREADS'";
  CommandResult two_ranks = run_command(two_cpus + " run --nproc-per-node 2" + echo);
  ASSERT_EQ(two_ranks.status, 0) << two_ranks.output;
  EXPECT_NE(two_ranks.output.find("[rank 0] threads=1\n"), std::string::npos) << two_ranks.output;
  EXPECT_NE(two_ranks.output.find("[rank 1] threads=1\n"), std::string::npos) << two_ranks.output;
  CommandResult one_rank = run_command(two_cpus + " run --nproc-per-node 1" + echo);
  EXPECT_NE(one_rank.output.find("[rank 0] threads=2\n"), std::string::npos) << one_rank.output;
  CommandResult from_fabricd = run_command("OMP_NUM_THREADS=3 taskset -c 0,1 " + kFabricd + " run --nproc-per-node 2" + echo);
  EXPECT_NE(from_fabricd.output.find("[rank 1] threads=3\n"), std::string::npos) << from_fabricd.output;
  CommandResult from_spec = run_command(two_cpus + " run --nproc-per-node 2 --env OMP_NUM_THREADS=4" + echo);
  EXPECT_NE(from_spec.output.find("[rank 1] threads=4\n"), std::string::npos) << from_spec.output;
  // What LibTorch itself runs with in a rank (the example prints at::get_num_threads()).
  CommandResult digits = run_command(two_cpus + " run --nproc-per-node 2 " + DIGITS +
                                     " --accelerator cpu --epochs 1 --log-dir /tmp/fabricd-e2e-threads-" +
                                     std::to_string(::getpid()));
  EXPECT_EQ(digits.status, 0) << digits.output;
  EXPECT_NE(digits.output.find("world size 2 | threads per rank 1\n"), std::string::npos) << digits.output;
}

// A rank that sleeps 100 ms before each step holds the other two up in backward: fabricd
// names it, with its lag; when every rank sleeps as long, nobody is named.
TEST(FabricdRun, AStragglerIsNamedWithItsLag_AndRanksThatKeepPaceAreNot) {
  const std::string run = kFabricd + " run --nproc-per-node 3 --heartbeat-timeout 2 " + DDP_WORKER + " straggler ";
  CommandResult slowed = run_command(run + "1 60 100");
  ASSERT_EQ(slowed.status, 0) << slowed.output;
  const TimedLine* named = slowed.find_line("fabricd: straggler: rank 1 lags the median rank by ");
  ASSERT_NE(named, nullptr) << slowed.output;
  const double lag = std::stod(named->text.substr(named->text.find(" by ") + 4));
  EXPECT_GT(lag, 0.08) << named->text;
  EXPECT_LT(lag, 0.2) << named->text;
  EXPECT_EQ(slowed.output.find("straggler: rank 0"), std::string::npos) << slowed.output;
  EXPECT_EQ(slowed.output.find("straggler: rank 2"), std::string::npos) << slowed.output;

  CommandResult even = run_command(run + "-1 60 100");
  ASSERT_EQ(even.status, 0) << even.output;
  EXPECT_EQ(even.output.find("straggler"), std::string::npos) << even.output;
}

// `fabricd run --serve`: the same JobService a cluster has, for one local job.
TEST(FabricdRun, ServeLetsAClientReadTheLogsAndCancelTheJob) {
  testing::ScopedTempDir dir;
  testing::Daemon run(kFabricd + " run --serve 127.0.0.1:0 --insecure --nproc-per-node 2 --grace-period 5 /bin/sh -c "
                                 "'echo up $RANK; exec sleep 60'",
                      dir.path() + "/run.log");
  ASSERT_TRUE(run.wait_for_output("[rank 1] up 1", std::chrono::seconds(20))) << run.output();
  const std::string output = run.output();
  const auto at = output.find("serving JobService for job ");
  ASSERT_NE(at, std::string::npos) << output;
  std::istringstream words(output.substr(at + 27));
  std::string job, on, server;
  words >> job >> on >> server;
  CommandResult plain = run_command(kFabricd + " logs " + job + " --server " + server);
  EXPECT_EQ(plain.status, 2) << "a client asks for plain text by name\n" << plain.output;
  EXPECT_NE(plain.output.find("--insecure"), std::string::npos) << plain.output;
  CommandResult logs = run_command(kFabricd + " logs " + job + " --insecure --server " + server);
  EXPECT_EQ(logs.status, 0) << logs.output;
  EXPECT_NE(logs.output.find("[rank 0] up 0"), std::string::npos) << logs.output;
  EXPECT_NE(logs.output.find("[rank 1] up 1"), std::string::npos) << logs.output;
  CommandResult submit = run_command(kFabricd + " submit --insecure --server " + server + " /bin/true");
  EXPECT_EQ(submit.status, 4) << submit.output;
  EXPECT_NE(submit.output.find("FAILED_PRECONDITION"), std::string::npos) << submit.output;
  CommandResult cancel = run_command(kFabricd + " cancel " + job + " --insecure --server " + server + " --reason test");
  EXPECT_EQ(cancel.status, 0) << cancel.output;
  EXPECT_NE(cancel.output.find("CANCELLED"), std::string::npos) << cancel.output;
  // The ranks get SIGTERM (sleep dies of it at once), and fabricd ends with their status.
  const auto status = run.wait(std::chrono::milliseconds(10'000));
  ASSERT_TRUE(status) << run.output();
  EXPECT_EQ(*status, 128 + SIGTERM) << run.output();
}

// The ranks' store takes only calls that carry the job's secret: a process without it, or
// with a guessed one, is refused UNAUTHENTICATED; the rank's own secret is accepted.
TEST(FabricdRun, TheStoreRefusesCallsWithoutTheJobsSecret) {
  const std::string probe = STORE_PROBE;
  CommandResult own = run_command(kFabricd + " run " + probe);
  EXPECT_EQ(own.status, 0) << own.output;
  EXPECT_NE(own.output.find("[rank 0] stored"), std::string::npos) << own.output;

  CommandResult none = run_command(kFabricd + " run " + probe + " --secret ''");
  EXPECT_EQ(none.status, 10) << none.output;
  EXPECT_NE(none.output.find("refused UNAUTHENTICATED"), std::string::npos) << none.output;
  CommandResult guessed = run_command(kFabricd + " run " + probe + " --secret 0123456789abcdef");
  EXPECT_EQ(guessed.status, 10) << guessed.output;

  // Nor does the secret show anywhere fabricd writes: not in its own output, nor in the
  // ranks' command line.
  CommandResult shown = run_command(kFabricd + " run /bin/sh -c 'cat /proc/$$/cmdline; echo; echo \"$FABRICD_JOB_SECRET\"'");
  ASSERT_EQ(shown.status, 0) << shown.output;
  const auto last = shown.output.rfind("[rank 0] ");
  ASSERT_NE(last, std::string::npos) << shown.output;
  const std::string secret = shown.output.substr(last + 9, 64);
  ASSERT_EQ(secret.size(), 64u) << "the rank's FABRICD_JOB_SECRET is 32 random bytes in hex\n" << shown.output;
  EXPECT_EQ(shown.output.find(secret), last + 9) << "the secret appears before the rank printed it\n" << shown.output;
}

}  // namespace
}  // namespace fabric
