// LeaderElection: the `fabricd serve` processes of one cluster (two or three, on different
// machines) campaign for its leadership through etcd's election API, each on a lease of its
// own that it keeps alive. One leads and serves; the others wait in the campaign and name
// the leader to whoever calls them (leader/follower_service.h). When the leader dies, its
// lease expires after the TTL and the next campaigner leads.
//
// A leader loses (`on_lost` fires, and it must stop acting as the leader at once) when
//   * etcd says its lease expired, or
//   * it has not renewed its lease for a TTL. It cannot tell a partition that cuts it alone
//     from etcd (etcd then lets the lease expire and another leads) from etcd without a
//     quorum (where no lease expires and nobody else can lead): it must assume the first,
//     as etcd's own clients and Kubernetes' leader election do. Another coordinator cannot
//     lead before the lease has expired in etcd, which is never before a TTL after the
//     last renewal this process sent.
// It then campaigns again: on the same lease while that lives, so that once etcd answers
// again the same process leads again at once (its key is still the oldest), or on a new
// one once etcd has let the old one expire.
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
  std::chrono::seconds lease_ttl{5};             // how soon a dead leader is replaced
  std::function<void(const std::string&)> on_lost;  // leadership lost, with why (any thread)
};

class LeaderElection {
 public:
  // Starts keeping a lease (granted by the first campaign) and looking up who leads; etcd
  // out of reach is not an error here, only a reason to wait.
  LeaderElection(std::shared_ptr<EtcdClient> etcd, LeaderElectionOptions options);
  // Resigns (when leading, so that a follower leads at once) and revokes the lease.
  ~LeaderElection();
  LeaderElection(const LeaderElection&) = delete;
  LeaderElection& operator=(const LeaderElection&) = delete;

  // Blocks until this process leads, granting a lease first when it has none and retrying
  // while etcd is out of reach; returns the fence its job store writes under, or
  // std::nullopt once cancel() was called. A campaign ends the previous leadership, if any.
  std::optional<EtcdFence> campaign();
  void cancel();
  // The address the leader proclaimed, as last seen (refreshed every 250 ms); empty while
  // nobody is known to lead.
  std::string leader();
  // Why etcd does not answer this process now (its last error), or "" while it does.
  std::string trouble();

 private:
  using Clock = std::chrono::steady_clock;
  // What one step of a campaign (a lease granted, or a campaign on it) came to.
  struct Attempt {
    std::int64_t lease = 0;
    Clock::time_point safe_until;  // etcd cannot let `lease` expire before this
    bool granted = false;
    std::optional<v3electionpb::LeaderKey> won;
    bool lease_gone = false;     // etcd refused the campaign on it: grant a new one
    bool lease_expired = false;  // ... saying the lease no longer exists
    std::string error;        // why it could not; "" (and nothing won) when cancelled
  };
  Attempt grant_lease();
  Attempt try_to_lead(std::int64_t lease);
  void keep_alive_loop();
  void watch_lease_loop();
  // Ends the leadership, if any, and calls on_lost(why) with `lock` released.
  void lose(std::unique_lock<std::mutex>& lock, const std::string& why);

  std::shared_ptr<EtcdClient> etcd_;
  LeaderElectionOptions options_;
  Cancellation campaign_;
  std::mutex mutex_;
  std::condition_variable changed_;
  bool stopping_ = false;
  std::int64_t lease_ = 0;          // 0: none yet, or etcd let it expire
  Clock::time_point lease_safe_until_;  // etcd cannot have let the lease expire before this
  std::string leader_, trouble_;
  std::optional<v3electionpb::LeaderKey> won_;
  std::thread keeper_, watchdog_;
};

}  // namespace fabric::launcher
