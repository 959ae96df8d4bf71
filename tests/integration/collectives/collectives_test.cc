// Collectives across real processes: every operation on 3 ranks, and the two ways a peer
// fails — it exits, or it hangs — each of which must turn into a CollectiveError on the
// survivors, naming the operation, within the configured timeout.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <future>
#include <sstream>
#include <string>
#include <vector>

extern char** environ;

namespace {

using Clock = std::chrono::steady_clock;

// A port nobody listens on right now (the kernel's pick for a socket bound to port 0).
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address));
  socklen_t length = sizeof(address);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  ::close(fd);
  return ntohs(address.sin_port);
}

struct Rank {
  pid_t pid = 0;
  std::string output;  // file with the rank's stdout
  std::future<int> status;
};

// Starts `world` workers running `scenario`, each with torchrun-style variables.
std::vector<Rank> start_ranks(int world, const std::string& scenario, int timeout_ms) {
  const int port = free_port();
  std::vector<Rank> ranks(static_cast<size_t>(world));
  for (int r = 0; r < world; ++r) {
    std::vector<std::string> env_strings;
    for (char** e = environ; *e; ++e) env_strings.emplace_back(*e);
    for (const auto& [name, value] : std::vector<std::pair<std::string, std::string>>{
             {"RANK", std::to_string(r)}, {"LOCAL_RANK", std::to_string(r)}, {"WORLD_SIZE", std::to_string(world)},
             {"MASTER_ADDR", "127.0.0.1"}, {"MASTER_PORT", std::to_string(port)}}) {
      env_strings.push_back(name + "=" + value);
    }
    std::vector<char*> envp;
    for (auto& s : env_strings) envp.push_back(s.data());
    envp.push_back(nullptr);
    ranks[r].output = "/tmp/collective-rank-" + std::to_string(::getpid()) + "-" + std::to_string(r) + ".out";
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, ranks[r].output.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    std::string program = COLLECTIVE_WORKER, timeout = std::to_string(timeout_ms), mode = scenario;
    std::vector<char*> argv{program.data(), mode.data(), timeout.data(), nullptr};
    EXPECT_EQ(::posix_spawn(&ranks[r].pid, program.c_str(), &actions, nullptr, argv.data(), envp.data()), 0);
    posix_spawn_file_actions_destroy(&actions);
    ranks[r].status = std::async(std::launch::async, [pid = ranks[r].pid] {
      int status = 0;
      ::waitpid(pid, &status, 0);
      return status;
    });
  }
  return ranks;
}

std::string read_file(const std::string& path) {
  std::ifstream file(path);
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

// Waits up to `limit` for the rank to exit; kills it if it has not (a test failure then).
int exit_code(Rank& rank, std::chrono::seconds limit) {
  if (rank.status.wait_for(limit) != std::future_status::ready) {
    ::kill(rank.pid, SIGKILL);
    ADD_FAILURE() << "rank " << rank.pid << " still running after " << limit.count() << " s";
  }
  const int status = rank.status.get();
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
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
  for (auto& rank : ranks) ::unlink(rank.output.c_str());
}

TEST(Collectives, PeerThatHangs_FailsTheOthersWhenTheTimeoutExpires) {
  constexpr int kTimeoutMs = 2000;
  auto ranks = start_ranks(2, "peer-hangs", kTimeoutMs);
  const auto start = Clock::now();
  EXPECT_EQ(exit_code(ranks[0], std::chrono::seconds(30)), 3);
  const auto elapsed = Clock::now() - start;
  const std::string output = read_file(ranks[0].output);
  EXPECT_NE(output.find("all_reduce failed on rank 0 of 2"), std::string::npos) << output;
  EXPECT_GE(elapsed, std::chrono::milliseconds(kTimeoutMs - 100)) << "it waited for the hung peer";
  EXPECT_LT(elapsed, std::chrono::milliseconds(kTimeoutMs + 3000)) << "detected within timeout + start-up";
  ::kill(ranks[1].pid, SIGKILL);  // the hung rank
  exit_code(ranks[1], std::chrono::seconds(10));
  for (auto& rank : ranks) ::unlink(rank.output.c_str());
}

}  // namespace
