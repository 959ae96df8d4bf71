#include "strategies/subprocess_launcher.h"

#include <ATen/Parallel.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <exception>
#include <fstream>
#include <iterator>

#include "fabric/errors.h"
#include "log/log.h"
#include "utilities/env.h"

extern char** environ;

namespace fabric::strategies {
namespace {

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    throw Error(std::string("launch(): cannot find a free port for rendezvous: ") + std::strerror(errno));
  }
  ::close(fd);
  return ntohs(address.sin_port);
}

std::vector<std::string> own_arguments() {
  std::ifstream file("/proc/self/cmdline", std::ios::binary);
  std::string all((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  std::vector<std::string> arguments;
  for (std::size_t start = 0; start < all.size();) {
    const std::size_t end = all.find('\0', start);
    arguments.push_back(all.substr(start, end - start));
    start = end == std::string::npos ? all.size() : end + 1;
  }
  return arguments;
}

// Lightning's _set_num_threads_if_needed: unless the user set OMP_NUM_THREADS, the node's
// CPUs (this process's affinity mask) are divided among its processes, so that N ranks do
// not each start one intra-op thread per core. The children inherit the variable; this
// process's LibTorch has already read it, so it is told directly.
void set_num_threads_if_needed(int num_processes) {
  if (env::get("OMP_NUM_THREADS")) return;
  cpu_set_t cpus;
  CPU_ZERO(&cpus);
  const int available = ::sched_getaffinity(0, sizeof(cpus), &cpus) == 0 ? CPU_COUNT(&cpus) : 1;
  const int threads = std::max(1, available / std::max(1, num_processes));
  at::set_num_threads(threads);
  env::set("OMP_NUM_THREADS", std::to_string(threads));
}

}  // namespace

SubprocessLauncher::SubprocessLauncher(int num_processes, int num_nodes, int node_rank) {
  set_num_threads_if_needed(num_processes);
  const int world_size = num_processes * num_nodes;
  env::set("MASTER_ADDR", env::get("MASTER_ADDR").value_or("127.0.0.1"));
  env::set("MASTER_PORT", env::get("MASTER_PORT").value_or(std::to_string(free_port())));
  env::set("WORLD_SIZE", std::to_string(world_size));
  env::set("NODE_RANK", std::to_string(node_rank));
  env::set("LOCAL_WORLD_SIZE", std::to_string(num_processes));
  std::vector<std::string> arguments = own_arguments();
  for (int local_rank = 1; local_rank < num_processes; ++local_rank) {
    // Everything the child needs is built before fork: after it, only exec-safe calls.
    std::vector<std::string> environment;
    for (char** entry = environ; *entry; ++entry) {
      std::string_view text(*entry);
      if (text.rfind("LOCAL_RANK=", 0) != 0 && text.rfind("RANK=", 0) != 0) environment.emplace_back(text);
    }
    environment.push_back("LOCAL_RANK=" + std::to_string(local_rank));
    environment.push_back("RANK=" + std::to_string(node_rank * num_processes + local_rank));
    std::vector<char*> argv, envp;
    for (auto& argument : arguments) argv.push_back(argument.data());
    argv.push_back(nullptr);
    for (auto& entry : environment) envp.push_back(entry.data());
    envp.push_back(nullptr);
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid < 0) throw Error(std::string("launch(): fork failed: ") + std::strerror(errno));
    if (pid == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);       // die with the launching rank
      if (::getppid() != parent) ::_exit(127);  // it already died
      ::execve("/proc/self/exe", argv.data(), envp.data());
      ::_exit(127);
    }
    children_.push_back(pid);
  }
  env::set("LOCAL_RANK", "0");
  env::set("RANK", std::to_string(node_rank * num_processes));
}

SubprocessLauncher::~SubprocessLauncher() {
  // Unwinding from an error on this rank: the others would wait in their next collective
  // until the timeout, so end them now instead of waiting for them.
  if (std::uncaught_exceptions() > 0) {
    for (pid_t child : children_) ::kill(child, SIGTERM);
  }
  for (pid_t child : children_) {
    int status = 0;
    if (::waitpid(child, &status, 0) == child && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
      log::warn("local rank process " + std::to_string(child) + " ended with " +
                (WIFEXITED(status) ? "exit code " + std::to_string(WEXITSTATUS(status))
                                   : "signal " + std::to_string(WTERMSIG(status))));
    }
  }
}

}  // namespace fabric::strategies
