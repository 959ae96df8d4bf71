// The JobStore (jobs/job_store.h) on etcd, for a control plane that outlives any one
// machine: each job is one key, `<prefix>/jobs/<job_id>`, holding its JobRecord, and each
// agent session one key, `<prefix>/sessions/<agent_id>`.
//
// etcd's revisions give JobStore's contract directly: a job's sequence is its key's
// create_revision (cluster-wide increasing, never reused) and its revision the key's
// mod_revision, which every write compares in one transaction. With a fence (the leader's
// election key) every write also checks that this coordinator still leads, so that a
// deposed leader can never commit anything.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "etcd/etcd_client.h"
#include "jobs/job_store.h"

namespace fabric::launcher {

struct EtcdFence {
  std::string key;                  // the election key this coordinator won
  std::int64_t create_revision = 0;  // and the revision that created it
};

std::unique_ptr<JobStore> open_etcd_job_store(std::shared_ptr<EtcdClient> etcd, std::string prefix,
                                              std::optional<EtcdFence> fence = std::nullopt);

}  // namespace fabric::launcher
