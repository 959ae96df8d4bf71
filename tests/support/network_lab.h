// A small network of test hosts on this machine: Linux network namespaces, one per node,
// joined through a bridge in a "switch" namespace by veth pairs, with addresses from
// 198.18.0.0/24 (RFC 2544's range for network tests, which nothing outside the lab uses).
// Daemons run inside a node with `ip netns exec`; cutting a node's link is `ip link set
// ... down` on its switch port. Everything is removed (processes killed, namespaces
// deleted) when the lab goes out of scope.
//
// Needs root and iproute2; NetworkLab::unavailable() says why a test must skip otherwise.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "support/processes.h"

extern char** environ;

namespace fabric::testing {

class NetworkLab {
 public:
  // Why namespaces cannot be made here, or "" when they can.
  static std::string unavailable() {
    if (::geteuid() != 0) return "network namespaces need root (CI runs as root)";
    if (run_command("command -v ip").status != 0) return "iproute2's ip is not installed (scripts/bootstrap installs it)";
    const std::string probe = "fabric-probe-" + std::to_string(::getpid());
    if (run_command("ip netns add " + probe).status != 0) return "ip netns add failed: no namespaces in this sandbox";
    run_command("ip netns del " + probe);
    return "";
  }

  // Nodes named `names` get 198.18.0.1, .2, ... in that order.
  explicit NetworkLab(const std::vector<std::string>& names) : prefix_("fab" + std::to_string(::getpid()) + "-") {
    sh("ip netns add " + ns("sw"));
    sh("ip -n " + ns("sw") + " link add br0 type bridge && ip -n " + ns("sw") + " link set br0 up");
    for (std::size_t i = 0; i < names.size(); ++i) {
      // Built by appending: `"p" + std::to_string(i)` trips GCC 12's -Wrestrict false positive.
      std::string port = "p", address = "198.18.0.";
      port += std::to_string(i);
      address += std::to_string(i + 1);
      const std::string node = ns(names[i]);
      sh("ip netns add " + node);
      sh("ip link add eth0 netns " + node + " type veth peer name " + port + " netns " + ns("sw"));
      sh("ip -n " + ns("sw") + " link set " + port + " master br0 up");
      sh("ip -n " + node + " addr add " + address + "/24 dev eth0 && ip -n " + node + " link set eth0 up && ip -n " +
         node + " link set lo up");
      nodes_.push_back({names[i], address, port});
    }
  }
  ~NetworkLab() {
    for (const auto& node : nodes_) remove_namespace(ns(node.name));
    remove_namespace(ns("sw"));
  }
  NetworkLab(const NetworkLab&) = delete;
  NetworkLab& operator=(const NetworkLab&) = delete;

  std::string address(const std::string& name) const { return find(name).address; }
  // The prefix for a command run inside the node.
  std::string exec(const std::string& name) const { return "ip netns exec " + ns(name) + " "; }
  // Cuts (or restores) the node's only link: its packets are dropped from now on.
  void set_link(const std::string& name, bool up) const {
    sh("ip -n " + ns("sw") + " link set " + find(name).port + (up ? " up" : " down"));
  }
  // Cuts (or restores) one path only: what `from` sends to `to` is dropped (a blackhole
  // route in `from`), while both keep talking to every other node.
  void set_route(const std::string& from, const std::string& to, bool reachable) const {
    sh("ip -n " + ns(from) + " route " + (reachable ? "del" : "add") + " blackhole " + find(to).address + "/32");
  }

 private:
  struct Node {
    std::string name, address, port;
  };
  const Node& find(const std::string& name) const {
    for (const auto& node : nodes_) {
      if (node.name == name) return node;
    }
    throw std::invalid_argument("no node " + name + " in the lab");
  }
  std::string ns(const std::string& name) const { return prefix_ + name; }
  static void sh(const std::string& command) {
    const CommandResult result = run_command(command);
    if (result.status != 0) throw std::runtime_error(command + " failed: " + result.output);
  }
  static void remove_namespace(const std::string& name) {
    run_command("ip netns pids " + name + " 2>/dev/null | xargs -r kill -9; ip netns del " + name + " 2>/dev/null");
  }

  const std::string prefix_;
  std::vector<Node> nodes_;
};

// A long-running process (a daemon, a watcher) with its output in a file, killed with
// SIGKILL when the object goes out of scope unless it has ended.
class Daemon {
 public:
  Daemon(const std::string& command, std::string log_path) : log_(std::move(log_path)) {
    const std::string shell = "/bin/sh", dash_c = "-c", line = "exec " + command + " >" + log_ + " 2>&1";
    std::vector<char*> argv{const_cast<char*>(shell.c_str()), const_cast<char*>(dash_c.c_str()),
                            const_cast<char*>(line.c_str()), nullptr};
    if (::posix_spawn(&pid_, shell.c_str(), nullptr, nullptr, argv.data(), environ) != 0) {
      throw std::runtime_error("cannot start " + command);
    }
  }
  ~Daemon() {
    if (!status_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  pid_t pid() const { return pid_; }
  std::string output() const {
    std::ifstream file(log_);
    std::stringstream text;
    text << file.rdbuf();
    return text.str();
  }
  // Waits (bounded) until the output contains `needle`; the time it was seen, or nullopt.
  std::optional<std::chrono::steady_clock::time_point> wait_for_output(const std::string& needle,
                                                                       std::chrono::milliseconds timeout) const {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      if (output().find(needle) != std::string::npos) return std::chrono::steady_clock::now();
      if (std::chrono::steady_clock::now() > deadline) return std::nullopt;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));  // polling a file: there is nothing to block on
    }
  }
  // Waits (bounded) for the process to end; its status (exit code or 128 + signal).
  std::optional<int> wait(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!status_) {
      int raw = 0;
      if (::waitpid(pid_, &raw, WNOHANG) == pid_) {
        status_ = WIFSIGNALED(raw) ? 128 + WTERMSIG(raw) : WEXITSTATUS(raw);
        break;
      }
      if (std::chrono::steady_clock::now() > deadline) return std::nullopt;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return status_;
  }
  void kill(int signal) const { ::kill(pid_, signal); }

 private:
  std::string log_;
  pid_t pid_ = 0;
  std::optional<int> status_;
};

}  // namespace fabric::testing
