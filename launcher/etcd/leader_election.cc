#include "etcd/leader_election.h"

#include <algorithm>
#include <iostream>

namespace fabric::launcher {

namespace {
constexpr std::chrono::milliseconds kTick{250};
// Between two campaigns that etcd refused, or two lease grants it could not take.
constexpr std::chrono::seconds kRetry{1};
// etcd's words (ErrLeaseNotFound) for a lease it does not have, or no longer.
constexpr const char* kLeaseNotFound = "requested lease not found";
}  // namespace

LeaderElection::LeaderElection(std::shared_ptr<EtcdClient> etcd, LeaderElectionOptions options)
    : etcd_(std::move(etcd)), options_(std::move(options)) {
  keeper_ = std::thread([this] { keep_alive_loop(); });
  watchdog_ = std::thread([this] { watch_lease_loop(); });
}

LeaderElection::~LeaderElection() {
  cancel();
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_all();
  keeper_.join();
  watchdog_.join();
  try {
    if (won_) etcd_->resign(*won_);
    if (lease_ != 0) etcd_->lease_revoke(lease_);
  } catch (const JobStoreError& error) {
    // The lease expires by itself after its TTL; a follower then leads.
    std::cerr << "fabricd serve: could not resign the leadership (" << error.what() << ")" << std::endl;
  }
}

std::optional<EtcdFence> LeaderElection::campaign() {
  std::unique_lock lock(mutex_);
  won_.reset();
  while (!stopping_ && !campaign_.cancelled()) {
    std::int64_t lease = lease_;
    lock.unlock();
    Attempt attempt;
    if (lease == 0) {
      attempt = grant_lease();
    } else {
      attempt = try_to_lead(lease);
    }
    lock.lock();
    if (attempt.granted) {
      // Published before the campaign, which waits as long as another leads: the keeper
      // renews it meanwhile. etcd answered: whatever kept this coordinator from campaigning
      // is over.
      lease_ = attempt.lease;
      lease_safe_until_ = attempt.safe_until;
      trouble_.clear();
      continue;
    }
    if (attempt.won && lease_ == attempt.lease) {
      won_ = attempt.won;
      lease_safe_until_ = attempt.safe_until;
      leader_ = options_.address;
      trouble_.clear();
      return EtcdFence{.key = attempt.won->key(), .create_revision = attempt.won->rev()};
    }
    if (!attempt.won && attempt.error.empty()) return std::nullopt;  // cancelled
    if (!attempt.error.empty() && attempt.error != trouble_) {  // said once, not once a second
      std::cerr << "fabricd serve: cannot campaign yet: " << attempt.error << std::endl;
    }
    if (!attempt.error.empty()) trouble_ = attempt.error;
    // A lease etcd no longer has: the next try grants a new one, at once when etcd said the
    // lease expired (while this coordinator was cut off from it), since etcd answers again;
    // after the usual pause for any other refusal, which may well come again.
    if (attempt.lease_gone && lease_ == attempt.lease) {
      lease_ = 0;
      if (attempt.lease_expired) continue;
    }
    changed_.wait_for(lock, kRetry, [&] { return stopping_ || campaign_.cancelled(); });
  }
  return std::nullopt;
}

LeaderElection::Attempt LeaderElection::grant_lease() {
  Attempt attempt;
  try {
    const auto sent = Clock::now();
    attempt.lease = etcd_->lease_grant(options_.lease_ttl.count()).id();
    attempt.safe_until = sent + options_.lease_ttl;
    attempt.granted = true;
  } catch (const JobStoreError& failure) {
    attempt.error = failure.what();
  }
  return attempt;
}

// One campaign on `lease`, without the lock; once elected, it renews the lease, so that
// the leadership starts with a full TTL ahead of it (a campaign that returns at once, its
// key being there from an earlier leadership, says nothing of how long the lease has left).
LeaderElection::Attempt LeaderElection::try_to_lead(std::int64_t lease) {
  Attempt attempt{.lease = lease};
  try {
    // Refused by etcd, which answered (campaign() retries while it is out of reach): the
    // lease expired, or was never granted.
    attempt.lease_gone = true;
    auto won = etcd_->campaign(options_.name, lease, options_.address, campaign_);
    attempt.lease_gone = false;
    if (!won) return attempt;  // cancelled
    const auto sent = Clock::now();
    const std::int64_t ttl = etcd_->lease_keep_alive(lease);
    if (ttl <= 0) {
      attempt.lease_gone = attempt.lease_expired = true;
      attempt.error = "etcd let the lease expire as this coordinator was elected";
      return attempt;
    }
    attempt.safe_until = sent + std::chrono::seconds(ttl);
    attempt.won = std::move(won);
  } catch (const JobStoreError& failure) {
    attempt.error = failure.what();
    attempt.lease_expired = attempt.lease_gone && attempt.error.find(kLeaseNotFound) != std::string::npos;
  }
  return attempt;
}

void LeaderElection::cancel() {
  campaign_.cancel();
  { std::lock_guard lock(mutex_); }  // so that a campaign between its check and its wait sees it
  changed_.notify_all();
}

std::string LeaderElection::leader() {
  std::lock_guard lock(mutex_);
  return leader_;
}

std::string LeaderElection::trouble() {
  std::lock_guard lock(mutex_);
  return trouble_;
}

void LeaderElection::lose(std::unique_lock<std::mutex>& lock, const std::string& why) {
  if (!won_) return;
  won_.reset();
  leader_.clear();
  if (!options_.on_lost) return;
  lock.unlock();  // on_lost may call back into this object
  options_.on_lost(why);
  lock.lock();
}

// Renews the lease every third of its TTL and, while following, looks up who leads.
void LeaderElection::keep_alive_loop() {
  const auto renew_every = std::chrono::duration_cast<std::chrono::milliseconds>(options_.lease_ttl) / 3;
  // Per member, so that trying three members blocks a renewal for half its interval at most.
  const auto renewal_timeout = std::max(std::chrono::milliseconds(250), renew_every / 6);
  auto next_renewal = Clock::now();
  bool failing = false;
  std::unique_lock lock(mutex_);
  while (!changed_.wait_for(lock, kTick, [&] { return stopping_; })) {
    const bool leading = won_.has_value();
    const std::int64_t lease = lease_;
    lock.unlock();
    std::optional<std::int64_t> ttl;
    std::optional<std::string> seen_leader, error;
    const auto sent = Clock::now();
    if (lease != 0 && sent >= next_renewal) {
      try {
        ttl = etcd_->lease_keep_alive(lease, renewal_timeout);
        next_renewal = sent + renew_every;
      } catch (const JobStoreError& failure) {
        // Tried again at the next tick, not a third of the TTL later: etcd electing a new
        // raft leader (a member lost) takes about a second, and the lease must be renewed
        // before the watchdog's deadline for this process to go on leading.
        error = failure.what();
      }
    }
    try {
      if (!leading && !error) seen_leader = etcd_->leader(options_.name);
    } catch (const JobStoreError& failure) {
      error = failure.what();
    }
    if (error && !std::exchange(failing, true)) std::cerr << "fabricd serve: cannot reach etcd: " << *error << std::endl;
    if (!error && ttl && std::exchange(failing, false)) std::cerr << "fabricd serve: etcd answers again" << std::endl;
    lock.lock();
    if (error) trouble_ = *error;
    else if (ttl) trouble_.clear();
    // Its own address, seen while not leading, is its key of an earlier leadership that is
    // campaigning again: no leader to send clients to.
    if (seen_leader && !won_) leader_ = *seen_leader == options_.address ? "" : *seen_leader;
    if (!ttl || lease_ != lease) continue;
    if (*ttl > 0) {
      lease_safe_until_ = sent + std::chrono::seconds(*ttl);
      continue;
    }
    lease_ = 0;
    lose(lock, "etcd let this coordinator's lease expire (it could not renew it within " +
                   std::to_string(options_.lease_ttl.count()) + " s)");
  }
}

// A leader steps down a tick before its lease could have expired in etcd, unrenewed.
void LeaderElection::watch_lease_loop() {
  std::unique_lock lock(mutex_);
  while (!changed_.wait_for(lock, kTick, [&] { return stopping_; })) {
    if (!won_ || Clock::now() + kTick < lease_safe_until_) continue;
    lose(lock, "could not renew its lease with etcd for " + std::to_string(options_.lease_ttl.count()) + " s (" +
                   (trouble_.empty() ? "no answer" : trouble_) +
                   "), so another coordinator may lead by now; following until etcd answers");
  }
}

}  // namespace fabric::launcher
