// Starting the ranks of a multi-process test as real processes with torchrun-style
// variables, and waiting for them with a deadline. Torch-free, so plain gtest drivers can use it.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <future>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "support/temp_dir.h"  // read_file

extern char** environ;

namespace fabric::testing {

// What a shell command printed (stdout and stderr together), line by line with the time
// each line arrived (system clock, ms: comparable with times a rank prints), and how it
// ended: its exit code, or 128 + signal.
struct TimedLine {
  std::int64_t at_ms;
  std::string text;
};
struct CommandResult {
  int status = -1;
  std::string output;
  std::vector<TimedLine> lines;
  // The first line containing `needle`, or nullptr.
  const TimedLine* find_line(const std::string& needle) const {
    for (const auto& line : lines) {
      if (line.text.find(needle) != std::string::npos) return &line;
    }
    return nullptr;
  }
};

inline std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Runs `command` through the shell and waits for it.
inline CommandResult run_command(const std::string& command) {
  CommandResult result;
  std::unique_ptr<FILE, decltype(&pclose)> pipe(popen((command + " 2>&1").c_str(), "r"), &pclose);
  char buffer[4096];
  while (fgets(buffer, sizeof(buffer), pipe.get())) {
    result.lines.push_back({now_ms(), buffer});
    result.output += buffer;
  }
  const int status = pclose(pipe.release());
  result.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

inline std::int64_t ms_between(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(b - a).count();
}

// A port nobody listens on right now (the kernel's pick for a socket bound to port 0).
// A loopback TCP port free now, for a process the test starts to listen on. Below the
// kernel's ephemeral range (ip_local_port_range), so that no outgoing connection of a test
// running beside this one can take it before that process binds it (CI saw a TCPStore fail
// with EADDRINUSE on a port bind(0) had handed out); random, so that tests running side by
// side rarely pick the same one, and checked free by binding it.
inline int free_port() {
  int lowest_ephemeral = 32768;
  if (std::FILE* range = std::fopen("/proc/sys/net/ipv4/ip_local_port_range", "r")) {
    if (std::fscanf(range, "%d", &lowest_ephemeral) != 1) lowest_ephemeral = 32768;
    std::fclose(range);
  }
  const int first = 10000, count = std::max(1000, lowest_ephemeral - first);
  thread_local std::mt19937 random(std::random_device{}());
  for (int attempt = 0; attempt < 100; ++attempt) {
    const int port = first + static_cast<int>(random() % static_cast<unsigned>(count));
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = htons(static_cast<std::uint16_t>(port));
    const bool bound = ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0;
    ::close(fd);
    if (bound) return port;
  }
  return 0;
}

struct RankProcess {
  pid_t pid = 0;
  std::string output;  // file holding the rank's stdout
  std::future<int> status;
};

// Starts `world` copies of `program args...`, rank r with RANK=r, LOCAL_RANK=r, WORLD_SIZE,
// MASTER_ADDR=127.0.0.1 and a fresh MASTER_PORT.
inline std::vector<RankProcess> start_ranks(const std::string& program, int world, std::vector<std::string> args) {
  const int port = free_port();
  std::vector<RankProcess> ranks(static_cast<size_t>(world));
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
    std::vector<std::string> argv_strings{program};
    argv_strings.insert(argv_strings.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& s : argv_strings) argv.push_back(s.data());
    argv.push_back(nullptr);
    ranks[r].output = "/tmp/fabric-rank-" + std::to_string(::getpid()) + "-" + std::to_string(r) + ".out";
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, ranks[r].output.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
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

// Waits up to `limit` for the rank to exit (killing it, and failing, if it has not); returns
// its exit code, or 128 + signal.
inline int exit_code(RankProcess& rank, std::chrono::seconds limit) {
  if (rank.status.wait_for(limit) != std::future_status::ready) {
    ::kill(rank.pid, SIGKILL);
    ADD_FAILURE() << "rank process " << rank.pid << " still running after " << limit.count() << " s";
  }
  const int status = rank.status.get();
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace fabric::testing
