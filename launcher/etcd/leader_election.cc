#include "etcd/leader_election.h"

#include <iostream>

namespace fabric::launcher {

namespace {
constexpr std::chrono::milliseconds kTick{250};
}

LeaderElection::LeaderElection(std::shared_ptr<EtcdClient> etcd, LeaderElectionOptions options)
    : etcd_(std::move(etcd)), options_(std::move(options)) {
  lease_ = etcd_->lease_grant(options_.lease_ttl.count()).id();
  keeper_ = std::thread([this] { keep_alive_loop(); });
}

LeaderElection::~LeaderElection() {
  cancel();
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  stopping_changed_.notify_all();
  keeper_.join();
  try {
    if (won_) etcd_->resign(*won_);
    etcd_->lease_revoke(lease_);
  } catch (const JobStoreError& error) {
    // The lease expires by itself after its TTL; a follower then leads.
    std::cerr << "fabricd serve: could not resign the leadership (" << error.what() << ")" << std::endl;
  }
}

std::optional<EtcdFence> LeaderElection::campaign() {
  const auto won = etcd_->campaign(options_.name, lease_, options_.address, campaign_);
  if (!won) return std::nullopt;
  std::lock_guard lock(mutex_);
  won_ = won;
  leader_ = options_.address;
  return EtcdFence{.key = won->key(), .create_revision = won->rev()};
}

void LeaderElection::cancel() { campaign_.cancel(); }

std::string LeaderElection::leader() {
  std::lock_guard lock(mutex_);
  return leader_;
}

// Renews the lease every third of its TTL and, while following, looks up who leads.
void LeaderElection::keep_alive_loop() {
  const auto renew_every = std::chrono::duration_cast<std::chrono::milliseconds>(options_.lease_ttl) / 3;
  auto next_renewal = std::chrono::steady_clock::now();
  bool renewal_failing = false;
  std::unique_lock lock(mutex_);
  while (!stopping_changed_.wait_for(lock, kTick, [&] { return stopping_; })) {
    const bool leading = won_.has_value();
    lock.unlock();
    std::optional<std::string> lost, seen_leader;
    try {
      if (std::chrono::steady_clock::now() >= next_renewal) {
        next_renewal = std::chrono::steady_clock::now() + renew_every;
        if (etcd_->lease_keep_alive(lease_) <= 0) {
          lost = "etcd let this coordinator's lease expire (it could not renew it within " +
                 std::to_string(options_.lease_ttl.count()) + " s)";
        } else if (std::exchange(renewal_failing, false)) {
          std::cerr << "fabricd serve: the lease is renewed again" << std::endl;
        }
      }
      if (!leading) seen_leader = etcd_->leader(options_.name);
    } catch (const JobStoreError& error) {
      if (!std::exchange(renewal_failing, true)) {
        std::cerr << "fabricd serve: cannot reach etcd: " << error.what() << std::endl;
      }
    }
    if (lost && leading && options_.on_lost) options_.on_lost(*lost);
    lock.lock();
    if (seen_leader && !won_) leader_ = *seen_leader;
    if (lost && leading) return;
  }
}

}  // namespace fabric::launcher
