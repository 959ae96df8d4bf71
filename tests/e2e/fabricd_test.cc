// fabricd run end to end, with real programs: training to accuracy under 4 ranks, a rank
// killed with SIGKILL (restart, or the job's status with the rank named), fabricd itself
// killed with SIGKILL (no rank survives it), and the errors for bad invocations.
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>

extern char** environ;

namespace {

struct Result {
  int status = -1;  // exit code, or 128 + signal
  std::string output;
};

// Runs `command` through the shell with stdout and stderr captured.
Result run(const std::string& command) {
  Result result;
  std::unique_ptr<FILE, decltype(&pclose)> pipe(popen((command + " 2>&1").c_str(), "r"), &pclose);
  char buffer[4096];
  while (fgets(buffer, sizeof(buffer), pipe.get())) result.output += buffer;
  const int status = pclose(pipe.release());
  result.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

const std::string kFabricd = FABRICD;

TEST(FabricdRun, DigitsTrainsToAccuracyWithFourRanks) {
  Result result = run(kFabricd + " run --nproc-per-node 4 " + DIGITS + " --accelerator cpu --require-accuracy 0.95 "
                      "--log-dir /tmp/fabricd-e2e-logs-" + std::to_string(::getpid()));
  EXPECT_EQ(result.status, 0) << result.output;
  EXPECT_NE(result.output.find("[rank 0] final test accuracy"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("world size 4"), std::string::npos) << result.output;
}

TEST(FabricdRun, KilledRankRestartsTheGroupAndTheJobCompletes) {
  Result result = run(kFabricd + " run --nproc-per-node 2 --max-restarts 1 " + DDP_WORKER + " flaky");
  EXPECT_EQ(result.status, 0) << result.output;
  EXPECT_NE(result.output.find("rank 1 failed with signal 9"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("restarting the job: generation 1"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("[rank 0] generation 1 done"), std::string::npos) << result.output;
}

TEST(FabricdRun, WithoutRestartsTheJobEndsWithTheRanksStatusAndNamesIt) {
  Result result = run(kFabricd + " run --nproc-per-node 2 --max-restarts 0 " + DDP_WORKER + " flaky");
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
       run(count).output != "3\n" && std::chrono::steady_clock::now() < deadline;) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_EQ(run(count).output, "3\n");
  ::kill(fabricd, SIGKILL);
  ::waitpid(fabricd, nullptr, 0);
  const auto killed = std::chrono::steady_clock::now();
  while (run(count).output != "0\n" && std::chrono::steady_clock::now() - killed < std::chrono::seconds(1)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(run(count).output, "0\n") << "ranks outlived fabricd by more than a second";
}

TEST(FabricdRun, BadInvocationsGiveOneLineAndADistinctCode) {
  Result missing = run(kFabricd + " run /no/such/program");
  EXPECT_EQ(missing.status, 127) << missing.output;
  EXPECT_NE(missing.output.find("does not exist"), std::string::npos) << missing.output;
  const std::string text_file = "/tmp/fabricd-e2e-" + std::to_string(::getpid());
  run("printf 'not a program' > " + text_file + " && chmod 644 " + text_file);
  Result not_executable = run(kFabricd + " run " + text_file);
  EXPECT_EQ(not_executable.status, 126) << not_executable.output;
  run("chmod 755 " + text_file);  // executable, but not a format the kernel runs
  Result cannot_start = run(kFabricd + " run --nproc-per-node 2 " + text_file);
  EXPECT_EQ(cannot_start.status, 126) << cannot_start.output;
  EXPECT_NE(cannot_start.output.find("cannot start"), std::string::npos) << cannot_start.output;
  ::unlink(text_file.c_str());
  Result bad_flag = run(kFabricd + " run --nproc-per-node zero /bin/true");
  EXPECT_EQ(bad_flag.status, 2) << bad_flag.output;
  Result help = run(kFabricd + " run --help");
  EXPECT_EQ(help.status, 0);
  EXPECT_NE(help.output.find("--max-restarts"), std::string::npos) << help.output;
}

}  // namespace
