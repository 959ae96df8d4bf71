// The SQLite JobStore (launcher/jobs/job_store.h) on a real file in a temp dir: jobs and
// sessions put, loaded, replaced and deleted; sequence numbers; what survives closing and
// reopening the file; a corrupt row; the in-memory store.

#include "jobs/job_store.h"

#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include <memory>
#include <string>
#include <vector>

#include "support/temp_dir.h"

namespace {

namespace v1 = fabric::v1;
using fabric::launcher::in_memory_job_store;
using fabric::launcher::JobStore;
using fabric::launcher::JobStoreError;
using fabric::launcher::open_sqlite_job_store;
using fabric::launcher::StoredJob;
using fabric::launcher::StoredSession;
using fabric::testing::ScopedTempDir;
using google::protobuf::util::MessageDifferencer;

StoredJob job(const std::string& id, v1::JobState state = v1::JOB_STATE_PENDING, const std::string& request_id = "") {
  StoredJob stored;
  v1::Job& j = *stored.record.mutable_job();
  j.set_job_id(id);
  j.set_state(state);
  j.mutable_spec()->set_program("./train");
  stored.record.set_request_id(request_id);
  return stored;
}

std::vector<std::string> ids(const std::vector<StoredJob>& jobs) {
  std::vector<std::string> out;
  for (const auto& stored : jobs) out.push_back(stored.record.job().job_id());
  return out;
}

// Runs one statement on the store's file behind its back; returns the rows it changed.
int execute_sql(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  EXPECT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  char* error = nullptr;
  const int code = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &error);
  const int changed = sqlite3_changes(db);
  const std::string message = error ? error : "";
  sqlite3_free(error);
  sqlite3_close(db);
  EXPECT_EQ(code, SQLITE_OK) << message;
  return changed;
}

class JobStoreTest : public ::testing::Test {
 protected:
  std::string path() const { return dir_ / "state.db"; }
  std::unique_ptr<JobStore> open() { return open_sqlite_job_store(path()); }

  ScopedTempDir dir_;
};

TEST_F(JobStoreTest, NewJobs_GetIncreasingSequences_AndLoadOldestFirst) {
  auto store = open();
  EXPECT_EQ(store->put_job(job("a")), 1);
  EXPECT_EQ(store->put_job(job("b")), 2);
  EXPECT_EQ(store->put_job(job("c")), 3);
  const auto jobs = store->load_jobs();
  EXPECT_EQ(ids(jobs), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(jobs[0].sequence, 1);
  EXPECT_EQ(jobs[2].sequence, 3);
}

TEST_F(JobStoreTest, PutWithItsSequence_ReplacesTheJobInPlace) {
  auto store = open();
  StoredJob a = job("a");
  a.sequence = store->put_job(a);
  store->put_job(job("b"));
  a.record.mutable_job()->set_state(v1::JOB_STATE_RUNNING);
  a.record.mutable_job()->set_restart_count(2);
  EXPECT_EQ(store->put_job(a), a.sequence);
  const auto jobs = store->load_jobs();
  ASSERT_EQ(ids(jobs), (std::vector<std::string>{"a", "b"}));  // still first: its sequence is kept
  EXPECT_EQ(jobs[0].record.job().state(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(jobs[0].record.job().restart_count(), 2);
}

TEST_F(JobStoreTest, SecondInsertOfTheSameJobId_IsRefused) {
  auto store = open();
  store->put_job(job("a"));
  EXPECT_THROW(store->put_job(job("a")), JobStoreError);
  EXPECT_EQ(store->load_jobs().size(), 1u);
}

TEST_F(JobStoreTest, DeletedJobs_AreGone_AndTheirSequencesNeverReused) {
  auto store = open();
  store->put_job(job("a"));
  store->put_job(job("b"));
  store->delete_job("b");
  store->delete_job("never-there");  // not an error
  EXPECT_EQ(ids(store->load_jobs()), std::vector<std::string>{"a"});
  // Newest-first listings rely on a new job always sorting after every earlier one.
  EXPECT_EQ(store->put_job(job("c")), 3);
}

TEST_F(JobStoreTest, TheWholeRecord_RoundTrips) {
  auto store = open();
  StoredJob stored = job("train-1", v1::JOB_STATE_RUNNING, "req-42");
  v1::JobRecord& record = stored.record;
  record.mutable_job()->add_nodes("node-a");
  record.mutable_job()->mutable_failure()->set_message("rank 3 on node-a exited with code 1");
  record.add_agent_ids("agent-node-a-1234");
  v1::RankExit& exit = *record.add_exits();
  exit.set_rank(3);
  exit.set_exit_code(1);
  exit.add_stderr_tail(std::string("not utf-8: \xff\xfe", 13));
  v1::StartRanks& start = *record.add_assignments();
  start.set_job_id("train-1");
  start.add_ranks(0);
  (*start.mutable_env())["MASTER_PORT"] = "29500";
  store->put_job(stored);
  const auto jobs = store->load_jobs();
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_TRUE(MessageDifferencer::Equals(jobs[0].record, record)) << jobs[0].record.DebugString();
}

TEST_F(JobStoreTest, Sessions_ArePutReplacedAndDeleted_ListedByNodeName) {
  auto store = open();
  store->put_session({.agent_id = "agent-2", .node_name = "node-b", .address = "10.0.0.2:7000", .slots = 8});
  store->put_session({.agent_id = "agent-1", .node_name = "node-a", .address = "10.0.0.1:7000", .slots = 4});
  store->put_session({.agent_id = "agent-1", .node_name = "node-a", .address = "10.0.0.1:7001", .slots = 2});
  auto sessions = store->load_sessions();
  ASSERT_EQ(sessions.size(), 2u);
  EXPECT_EQ(sessions[0].agent_id, "agent-1");
  EXPECT_EQ(sessions[0].node_name, "node-a");
  EXPECT_EQ(sessions[0].address, "10.0.0.1:7001");
  EXPECT_EQ(sessions[0].slots, 2);
  EXPECT_EQ(sessions[1].agent_id, "agent-2");
  store->delete_session("agent-2");
  store->delete_session("unknown");
  sessions = store->load_sessions();
  ASSERT_EQ(sessions.size(), 1u);
  EXPECT_EQ(sessions[0].agent_id, "agent-1");
}

TEST_F(JobStoreTest, Everything_SurvivesClosingAndReopeningTheFile) {
  {
    auto store = open();
    store->put_job(job("a", v1::JOB_STATE_SUCCEEDED, "req-a"));
    StoredJob b = job("b", v1::JOB_STATE_RUNNING);
    b.sequence = store->put_job(b);
    b.record.mutable_job()->set_restart_count(1);
    store->put_job(b);
    store->put_job(job("c"));
    store->delete_job("c");
    store->put_session({.agent_id = "agent-1", .node_name = "node-a", .address = "10.0.0.1:7000", .slots = 4});
  }
  auto store = open();
  const auto jobs = store->load_jobs();
  ASSERT_EQ(ids(jobs), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(jobs[0].record.request_id(), "req-a");
  EXPECT_EQ(jobs[0].record.job().state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(jobs[1].record.job().restart_count(), 1);
  EXPECT_EQ(jobs[1].sequence, 2);
  const auto sessions = store->load_sessions();
  ASSERT_EQ(sessions.size(), 1u);
  EXPECT_EQ(sessions[0].slots, 4);
  // The sequence carries on after the reopen (3 was used by the deleted job).
  EXPECT_EQ(store->put_job(job("d")), 4);
}

// The records hold the jobs' secrets: nobody but the coordinator's user may read them.
TEST_F(JobStoreTest, TheFile_IsReadableByItsOwnerOnly) {
  auto store = open();
  StoredJob stored;
  stored.record.mutable_job()->set_job_id("j");
  stored.record.set_job_secret("s");
  store->put_job(stored);
  for (const std::string suffix : {"", "-wal"}) {
    struct stat info {};
    ASSERT_EQ(::stat((path() + suffix).c_str(), &info), 0) << path() + suffix;
    EXPECT_EQ(info.st_mode & 0777, 0600u) << path() + suffix;
  }
}

TEST_F(JobStoreTest, CorruptJobRow_IsAJobStoreErrorNamingTheRow) {
  open()->put_job(job("a"));
  // Field 1 (Job) announced with 5 bytes that are not there: never parses.
  ASSERT_EQ(execute_sql(path(), "UPDATE jobs SET job = X'0A05' WHERE sequence = 1"), 1);
  auto store = open();
  try {
    store->load_jobs();
    FAIL() << "a corrupt row loaded";
  } catch (const JobStoreError& error) {
    EXPECT_NE(std::string(error.what()).find("job #1"), std::string::npos) << error.what();
  }
}

TEST_F(JobStoreTest, UnopenablePath_IsAJobStoreErrorNamingIt) {
  const std::string bad = dir_ / "no-such-dir/state.db";
  try {
    open_sqlite_job_store(bad);
    FAIL() << "opened " << bad;
  } catch (const JobStoreError& error) {
    EXPECT_NE(std::string(error.what()).find(bad), std::string::npos) << error.what();
  }
}

TEST_F(JobStoreTest, FileThatIsNotADatabase_IsAJobStoreError) {
  fabric::testing::write_file(path(), std::string(4096, 'x'));
  EXPECT_THROW(open(), JobStoreError);
}

TEST(InMemoryJobStore, WorksLikeTheFile_AndEachStoreIsItsOwn) {
  auto first = in_memory_job_store();
  auto second = in_memory_job_store();
  EXPECT_EQ(first->put_job(job("a")), 1);
  EXPECT_EQ(first->put_job(job("b")), 2);
  first->put_session({.agent_id = "agent-1", .node_name = "n", .address = "h:1", .slots = 1});
  EXPECT_EQ(ids(first->load_jobs()), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(first->load_sessions().size(), 1u);
  EXPECT_TRUE(second->load_jobs().empty());
  EXPECT_TRUE(second->load_sessions().empty());
  first->delete_job("a");
  EXPECT_EQ(ids(first->load_jobs()), std::vector<std::string>{"b"});
}

}  // namespace
