#include "etcd/etcd_job_store.h"

#include <algorithm>
#include <map>
#include <mutex>
#include <vector>

namespace fabric::launcher {
namespace {

namespace pb = etcdserverpb;

// The end of the range of every key that starts with `prefix` (etcd's convention: the
// prefix with its last byte incremented).
std::string prefix_end(std::string prefix) {
  prefix.back() = static_cast<char>(prefix.back() + 1);
  return prefix;
}

class EtcdJobStore final : public JobStore {
 public:
  EtcdJobStore(std::shared_ptr<EtcdClient> etcd, const std::string& prefix, std::optional<EtcdFence> fence)
      : etcd_(std::move(etcd)), jobs_(prefix + "/jobs/"), sessions_(prefix + "/sessions/"), fence_(std::move(fence)) {}

  void put_job(StoredJob& stored) override {
    const std::string key = jobs_ + stored.record.job().job_id();
    std::string value;
    stored.record.SerializeToString(&value);
    pb::TxnRequest request;
    pb::Compare& unchanged = *request.add_compare();
    unchanged.set_key(key);
    unchanged.set_result(pb::Compare::EQUAL);
    if (stored.revision == 0) {
      unchanged.set_target(pb::Compare::CREATE);
      unchanged.set_create_revision(0);  // absent
    } else {
      unchanged.set_target(pb::Compare::MOD);
      unchanged.set_mod_revision(stored.revision);
    }
    pb::PutRequest& put = *request.add_success()->mutable_request_put();
    put.set_key(key);
    put.set_value(value);
    request.add_failure()->mutable_request_range()->set_key(key);
    pb::TxnResponse response;
    try {
      response = commit(request);
    } catch (const JobStoreUnavailable&) {
      // Not made, or made without our hearing of it: a proposal that timed out may still
      // commit once etcd has its quorum back. Remembered, to be recognised as ours.
      std::lock_guard lock(mutex_);
      unconfirmed_[key].push_back(value);
      throw;
    }
    if (response.succeeded()) {
      forget_unconfirmed(key);
      stored.revision = response.header().revision();
      if (unchanged.target() == pb::Compare::CREATE) stored.sequence = stored.revision;
      return;
    }
    const auto& found = response.responses(0).response_range().kvs();
    // A write of ours that committed unheard: this one (done), or an earlier one (write on top).
    if (!found.empty() && (found[0].value() == value || was_unconfirmed(key, found[0].value()))) {
      forget_unconfirmed(key);
      stored.sequence = found[0].create_revision();
      stored.revision = found[0].mod_revision();
      if (found[0].value() != value) put_job(stored);
      return;
    }
    throw JobStoreConflict("job store: job " + stored.record.job().job_id() +
                           (found.empty() ? std::string(" is not in etcd")
                                          : " is at revision " + std::to_string(found[0].mod_revision())) +
                           (stored.revision == 0 ? std::string(", so it cannot be inserted")
                                                 : ", not " + std::to_string(stored.revision)) +
                           ": another coordinator wrote it");
  }

  void delete_job(const std::string& job_id) override {
    pb::TxnRequest request;
    request.add_success()->mutable_request_delete_range()->set_key(jobs_ + job_id);
    commit(request);
  }

  std::vector<StoredJob> load_jobs() override {
    std::vector<StoredJob> jobs;
    const pb::RangeResponse found = range(jobs_);
    for (const auto& kv : found.kvs()) {
      StoredJob stored{.sequence = kv.create_revision(), .revision = kv.mod_revision()};
      if (!stored.record.ParseFromString(kv.value())) {
        throw JobStoreError("job store: etcd key " + kv.key() + " does not parse as fabric.v1.JobRecord");
      }
      jobs.push_back(std::move(stored));
    }
    return jobs;
  }

  void put_session(const StoredSession& session) override {
    fabric::v1::SessionRecord record;
    record.set_agent_id(session.agent_id);
    record.set_node_name(session.node_name);
    record.set_address(session.address);
    record.set_slots(session.slots);
    pb::TxnRequest request;
    pb::PutRequest& put = *request.add_success()->mutable_request_put();
    put.set_key(sessions_ + session.agent_id);
    record.SerializeToString(put.mutable_value());
    commit(request);
  }

  void delete_session(const std::string& agent_id) override {
    pb::TxnRequest request;
    request.add_success()->mutable_request_delete_range()->set_key(sessions_ + agent_id);
    commit(request);
  }

  std::vector<StoredSession> load_sessions() override {
    std::vector<StoredSession> sessions;
    const pb::RangeResponse found = range(sessions_);
    for (const auto& kv : found.kvs()) {
      fabric::v1::SessionRecord record;
      if (!record.ParseFromString(kv.value())) {
        throw JobStoreError("job store: etcd key " + kv.key() + " does not parse as fabric.v1.SessionRecord");
      }
      sessions.push_back({.agent_id = record.agent_id(),
                          .node_name = record.node_name(),
                          .address = record.address(),
                          .slots = record.slots()});
    }
    std::sort(sessions.begin(), sessions.end(),
              [](const StoredSession& a, const StoredSession& b) { return a.node_name < b.node_name; });
    return sessions;
  }

 private:
  // Every key under `prefix`, oldest first (a linearizable read: what the quorum holds).
  pb::RangeResponse range(const std::string& prefix) {
    pb::RangeRequest request;
    request.set_key(prefix);
    request.set_range_end(prefix_end(prefix));
    request.set_sort_target(pb::RangeRequest::CREATE);
    request.set_sort_order(pb::RangeRequest::ASCEND);
    return etcd_->range(request);
  }

  // Commits `request` with the fence's compare added: a coordinator whose election key is
  // gone (another leads) writes nothing, and is told so.
  pb::TxnResponse commit(pb::TxnRequest& request) {
    if (!fence_) return etcd_->txn(request);
    pb::Compare& leads = *request.add_compare();
    leads.set_key(fence_->key);
    leads.set_target(pb::Compare::CREATE);
    leads.set_result(pb::Compare::EQUAL);
    leads.set_create_revision(fence_->create_revision);
    request.add_failure()->mutable_request_range()->set_key(fence_->key);
    const pb::TxnResponse response = etcd_->txn(request);
    if (!response.succeeded()) {
      const auto& election_key = response.responses(response.responses_size() - 1).response_range().kvs();
      if (election_key.empty() || election_key[0].create_revision() != fence_->create_revision) {
        throw JobStoreConflict("job store: this coordinator no longer leads (its election key " + fence_->key +
                               " is gone): another coordinator does, and this one writes nothing more");
      }
    }
    return response;
  }

  void forget_unconfirmed(const std::string& key) {
    std::lock_guard lock(mutex_);
    unconfirmed_.erase(key);
  }
  bool was_unconfirmed(const std::string& key, const std::string& value) {
    std::lock_guard lock(mutex_);
    const auto attempts = unconfirmed_.find(key);
    return attempts != unconfirmed_.end() &&
           std::find(attempts->second.begin(), attempts->second.end(), value) != attempts->second.end();
  }

  std::shared_ptr<EtcdClient> etcd_;
  const std::string jobs_, sessions_;
  std::mutex mutex_;
  // By key: the values of writes whose outcome we never heard, since the last we did.
  std::map<std::string, std::vector<std::string>> unconfirmed_;
  const std::optional<EtcdFence> fence_;
};

}  // namespace

std::unique_ptr<JobStore> open_etcd_job_store(std::shared_ptr<EtcdClient> etcd, std::string prefix,
                                              std::optional<EtcdFence> fence) {
  return std::make_unique<EtcdJobStore>(std::move(etcd), prefix, std::move(fence));
}

}  // namespace fabric::launcher
