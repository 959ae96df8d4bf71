// A real etcd cluster for a test: `members` etcd processes (Debian's etcd-server, which
// scripts/bootstrap installs) on free ports of `host` (loopback by default; a NetworkLab
// node's address with that node's `exec` prefix), their data in the test's temp dir.
// Members can be killed and started again (on their data: they rejoin). Destroying the
// object kills them all.
#pragma once

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "support/network_lab.h"
#include "support/processes.h"

namespace fabric::testing {

class EtcdCluster {
 public:
  // Why a cluster cannot be started here; empty when it can.
  static std::string unavailable() {
    return ::access("/usr/bin/etcd", X_OK) == 0 ? "" : "no /usr/bin/etcd: install etcd-server (scripts/bootstrap does)";
  }

  EtcdCluster(const std::string& dir, int members, std::string host = "127.0.0.1", std::string exec_prefix = "")
      : dir_(dir), host_(std::move(host)), exec_(std::move(exec_prefix)) {
    std::filesystem::create_directories(dir_);
    std::string initial;
    for (int i = 0; i < members; ++i) {
      members_.push_back({.name = std::string("m") + std::to_string(i), .client_port = free_port(), .peer_port = free_port()});
      if (i > 0) initial += ",";
      initial += members_.back().name + "=" + peer_url(members_.back());
    }
    initial_cluster_ = initial;
    for (std::size_t i = 0; i < members_.size(); ++i) start(i);
    for (std::size_t i = 0; i < members_.size(); ++i) wait_healthy(i);
  }

  // "host:p0,host:p1,…"
  std::string endpoints() const {
    std::string joined;
    for (const Member& member : members_) {
      if (!joined.empty()) joined += ",";
      joined += endpoint(member);
    }
    return joined;
  }
  std::string url(const std::string& prefix = "/fabricd") const { return "etcd://" + endpoints() + prefix; }
  std::size_t size() const { return members_.size(); }

  void kill(std::size_t i) {
    members_[i].process->kill(SIGKILL);
    members_[i].process->wait(std::chrono::milliseconds(10'000));
    members_[i].process.reset();
  }
  // Starts member i again on its data dir, and waits until it answers.
  void restart(std::size_t i) {
    start(i);
    wait_healthy(i);
  }
  // True once member i answers a linearizable read (so it is in a cluster with a leader).
  bool healthy(std::size_t i) const {
    return run_command("ETCDCTL_API=3 " + exec_ + "etcdctl --endpoints " + endpoint(members_[i]) +
                       " --command-timeout 2s endpoint health")
               .status == 0;
  }

 private:
  struct Member {
    std::string name;
    int client_port = 0, peer_port = 0;
    std::unique_ptr<Daemon> process;
    int starts = 0;
  };
  std::string endpoint(const Member& member) const { return host_ + ":" + std::to_string(member.client_port); }
  std::string peer_url(const Member& member) const { return "http://" + host_ + ":" + std::to_string(member.peer_port); }

  void start(std::size_t i) {
    Member& member = members_[i];
    const std::string client = std::string("http://") + endpoint(member);
    member.process = std::make_unique<Daemon>(
        exec_ + "/usr/bin/etcd --name " + member.name + " --data-dir " + dir_ + "/" + member.name +
            " --listen-client-urls " + client + " --advertise-client-urls " + client + " --listen-peer-urls " +
            peer_url(member) + " --initial-advertise-peer-urls " + peer_url(member) + " --initial-cluster " +
            initial_cluster_ + " --initial-cluster-state new --initial-cluster-token " + "fabricd-test",
        dir_ + "/" + member.name + "." + std::to_string(member.starts++) + ".log");
  }

  // Bounded: a member that never answers fails the test, with its log.
  void wait_healthy(std::size_t i) const {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (!healthy(i)) {
      if (std::chrono::steady_clock::now() > deadline) {
        throw std::runtime_error("etcd member " + members_[i].name + " did not come up: " +
                                 members_[i].process->output());
      }
    }
  }

  std::string dir_, host_, exec_;
  std::string initial_cluster_;
  std::vector<Member> members_;
};

}  // namespace fabric::testing
