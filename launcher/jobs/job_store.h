// JobStore: what a coordinator must not forget when it is killed and restarted — every
// job as clients see it (spec, state, history) and the agent sessions it had, so that
// agents keep their sessions and running jobs are re-adopted rather than restarted.
//
// The coordinator keeps its working state in memory and writes each change through before
// it answers (or acts on) it. One interface, so the embedded SQLite file and a replicated
// store are interchangeable. Implementations are thread-safe; every call is durable when
// it returns, or throws JobStoreError.
//
// Two coordinators may share one store (an etcd cluster, one SQLite file): job writes are
// compare-and-swap on the job's revision, so that of two writers holding the same revision
// exactly one commits, and the other is told (JobStoreConflict) instead of overwriting.
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "fabric/v1/store.pb.h"

namespace fabric::launcher {

class JobStoreError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Another writer changed the job since this one read it (or inserted the same job_id): the
// write was not made. For a coordinator this means another one leads now.
class JobStoreConflict : public JobStoreError {
 public:
  using JobStoreError::JobStoreError;
};

// The store cannot take writes now (etcd without a quorum, a store out of reach), and says
// so; nothing was written. Worth retrying later.
class JobStoreUnavailable : public JobStoreError {
 public:
  using JobStoreError::JobStoreError;
};

struct StoredJob {
  fabric::v1::JobRecord record;
  std::int64_t sequence = 0;  // submission order, for newest-first listings; assigned by the store
  std::int64_t revision = 0;  // the store's version of this job (0: never written); assigned by the store
};

struct StoredSession {
  std::string agent_id;
  std::string node_name;
  std::string address;  // the agent's RendezvousService, host:port
  std::int32_t slots = 0;
};

class JobStore {
 public:
  virtual ~JobStore() = default;
  // Writes `job` if the store still holds the revision it carries: revision 0 inserts a new
  // job (the store assigns the next sequence), any other replaces that revision. Sets the
  // job's sequence and new revision. Throws JobStoreConflict when the stored revision is
  // another (or the job_id is taken, for an insert).
  virtual void put_job(StoredJob& job) = 0;
  virtual void delete_job(const std::string& job_id) = 0;
  // Every job with its revision, oldest first.
  virtual std::vector<StoredJob> load_jobs() = 0;

  virtual void put_session(const StoredSession& session) = 0;
  virtual void delete_session(const std::string& agent_id) = 0;
  virtual std::vector<StoredSession> load_sessions() = 0;
};

// One SQLite file (WAL journal, synchronous=FULL), created when missing. Several stores
// (processes) may open the same file.
std::unique_ptr<JobStore> open_sqlite_job_store(const std::string& path);
// Nothing survives the process: for `fabricd serve` without --state, and for tests.
std::unique_ptr<JobStore> in_memory_job_store();

}  // namespace fabric::launcher
