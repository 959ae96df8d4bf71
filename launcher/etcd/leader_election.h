// LeaderElection: the `fabricd serve` processes of one cluster (two or three, on different
// machines) campaign for its leadership through etcd's election API, each on a lease of its
// own that it keeps alive. One leads and serves; the others wait in the campaign and name
// the leader to whoever calls them (leader/follower_service.h). When the leader dies, its
// lease expires after the TTL and the next campaigner leads.
//
// A leader whose lease etcd let expire (it could not renew it in time) has lost: `on_lost`
// fires and it must stop, since another may lead already. A leader that merely cannot reach
// a quorum keeps its lease: etcd expires no lease while it has no raft leader, and renews
// them all when it has one again.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "etcd/etcd_client.h"
#include "etcd/etcd_job_store.h"

namespace fabric::launcher {

struct LeaderElectionOptions {
  std::string name;                              // the election's key, e.g. /fabricd/leader
  std::string address;                           // proclaimed: where clients reach this coordinator
  std::chrono::seconds lease_ttl{3};             // how soon a dead leader is replaced
  std::function<void(const std::string&)> on_lost;  // leadership lost, with why (any thread)
};

class LeaderElection {
 public:
  // Grants the lease and starts keeping it alive. Throws JobStoreError.
  LeaderElection(std::shared_ptr<EtcdClient> etcd, LeaderElectionOptions options);
  // Resigns (when leading, so that a follower leads at once) and revokes the lease.
  ~LeaderElection();
  LeaderElection(const LeaderElection&) = delete;
  LeaderElection& operator=(const LeaderElection&) = delete;

  // Blocks until this process leads; returns the fence its job store writes under, or
  // std::nullopt once cancel() was called.
  std::optional<EtcdFence> campaign();
  void cancel();
  // The address the leader proclaimed, as last seen (refreshed every 250 ms); empty while
  // nobody leads or etcd is out of reach.
  std::string leader();

 private:
  void keep_alive_loop();

  std::shared_ptr<EtcdClient> etcd_;
  LeaderElectionOptions options_;
  std::int64_t lease_ = 0;
  Cancellation campaign_;
  std::mutex mutex_;
  std::condition_variable stopping_changed_;
  bool stopping_ = false;
  std::string leader_;
  std::optional<v3electionpb::LeaderKey> won_;
  std::thread keeper_;
};

}  // namespace fabric::launcher
