// The JobStore contract (launcher/jobs/job_store.h), one suite run on both backends: a real
// SQLite file in a temp dir, and a real etcd (tests/support/etcd_cluster.h) under a prefix of
// the test's own. Jobs and sessions put, loaded, replaced and deleted; sequences; revisions
// compared by every write, so that of two writers holding one revision exactly one commits;
// what survives reopening. Then what only one backend has: the SQLite file's mode, corrupt
// rows and unopenable paths, the in-memory store; etcd's leader fence, an unreachable
// cluster, and its URLs.

#include "jobs/job_store.h"

#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include <atomic>
#include <barrier>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "etcd/etcd_client.h"
#include "etcd/etcd_job_store.h"
#include "etcd/leader_election.h"
#include "support/etcd_cluster.h"
#include "support/temp_dir.h"

namespace {

namespace v1 = fabric::v1;
using fabric::launcher::EtcdClient;
using fabric::launcher::in_memory_job_store;
using fabric::launcher::JobStore;
using fabric::launcher::JobStoreConflict;
using fabric::launcher::JobStoreError;
using fabric::launcher::JobStoreUnavailable;
using fabric::launcher::open_etcd_job_store;
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

// Each test gets a store of its own: a file in its temp dir, or a key prefix of its own in
// the one etcd the suite starts.
class JobStoreContract : public ::testing::TestWithParam<std::string> {
 protected:
  static void TearDownTestSuite() {
    etcd_.reset();
    etcd_dir_.reset();
  }
  void SetUp() override {
    if (GetParam() != "etcd") return;
    if (const std::string why = fabric::testing::EtcdCluster::unavailable(); !why.empty()) GTEST_SKIP() << why;
    if (!etcd_) {
      etcd_dir_ = std::make_unique<ScopedTempDir>();
      etcd_ = std::make_unique<fabric::testing::EtcdCluster>(etcd_dir_->path(), 1);
    }
    prefix_ = "/test-" + std::to_string(++tests_);
  }
  // A store on the same data as every other this test opens: another writer, or the same
  // store after a restart.
  std::unique_ptr<JobStore> open() {
    if (GetParam() == "sqlite") return open_sqlite_job_store(dir_ / "state.db");
    return open_etcd_job_store(std::make_shared<EtcdClient>(fabric::launcher::parse_etcd_url(etcd_->url()).endpoints),
                               prefix_);
  }
  // put_job on a fresh copy, as a test writes: returns the sequence it was given.
  static std::int64_t put(JobStore& store, StoredJob stored) {
    store.put_job(stored);
    return stored.sequence;
  }

  ScopedTempDir dir_;
  std::string prefix_;
  static inline std::unique_ptr<ScopedTempDir> etcd_dir_;
  static inline std::unique_ptr<fabric::testing::EtcdCluster> etcd_;
  static inline int tests_ = 0;
};

INSTANTIATE_TEST_SUITE_P(Backends, JobStoreContract, ::testing::Values("sqlite", "etcd"),
                         [](const auto& info) { return info.param; });

TEST_P(JobStoreContract, NewJobs_GetIncreasingSequences_AndLoadOldestFirst) {
  auto store = open();
  const std::int64_t a = put(*store, job("a")), b = put(*store, job("b")), c = put(*store, job("c"));
  EXPECT_GT(a, 0);
  EXPECT_LT(a, b);
  EXPECT_LT(b, c);
  const auto jobs = store->load_jobs();
  EXPECT_EQ(ids(jobs), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(jobs[0].sequence, a);
  EXPECT_EQ(jobs[2].sequence, c);
}

TEST_P(JobStoreContract, PutAtItsRevision_ReplacesTheJobInPlace_AndMovesTheRevisionOn) {
  auto store = open();
  StoredJob a = job("a");
  store->put_job(a);
  const std::int64_t sequence = a.sequence, first_revision = a.revision;
  EXPECT_GT(first_revision, 0);
  put(*store, job("b"));
  a.record.mutable_job()->set_state(v1::JOB_STATE_RUNNING);
  a.record.mutable_job()->set_restart_count(2);
  store->put_job(a);
  EXPECT_EQ(a.sequence, sequence);
  EXPECT_GT(a.revision, first_revision);
  const auto jobs = store->load_jobs();
  ASSERT_EQ(ids(jobs), (std::vector<std::string>{"a", "b"}));  // still first: its sequence is kept
  EXPECT_EQ(jobs[0].record.job().state(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(jobs[0].record.job().restart_count(), 2);
  EXPECT_EQ(jobs[0].revision, a.revision);
}

TEST_P(JobStoreContract, SecondInsertOfTheSameJobId_IsAConflict) {
  auto store = open();
  put(*store, job("a"));
  StoredJob again = job("a", v1::JOB_STATE_RUNNING);
  EXPECT_THROW(store->put_job(again), JobStoreConflict);
  const auto jobs = store->load_jobs();
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(jobs[0].record.job().state(), v1::JOB_STATE_PENDING);
}

TEST_P(JobStoreContract, WriteAtAStaleRevision_IsAConflict_AndChangesNothing) {
  auto store = open();
  StoredJob mine = job("a");
  store->put_job(mine);
  StoredJob stale = mine;
  mine.record.mutable_job()->set_state(v1::JOB_STATE_RUNNING);
  store->put_job(mine);
  stale.record.mutable_job()->set_state(v1::JOB_STATE_CANCELLED);
  EXPECT_THROW(store->put_job(stale), JobStoreConflict);
  EXPECT_EQ(store->load_jobs().at(0).record.job().state(), v1::JOB_STATE_RUNNING);
}

// Two coordinators (two stores, two connections) that loaded one job both try to move it
// on from the same revision, at the same moment: one commits, the other is told.
TEST_P(JobStoreContract, TwoWritersOfOneRevision_ExactlyOneWins) {
  auto first = open();
  auto second = open();
  StoredJob seed = job("contended");
  first->put_job(seed);
  constexpr int kRounds = 20;
  for (int round = 0; round < kRounds; ++round) {
    StoredJob base = second->load_jobs().at(0);
    std::atomic<int> wins{0}, conflicts{0};
    std::barrier start(2);
    auto writer = [&](JobStore& store, v1::JobState state) {
      StoredJob mine = base;
      mine.record.mutable_job()->set_state(state);
      mine.record.mutable_job()->set_restart_count(round + 1);
      start.arrive_and_wait();
      try {
        store.put_job(mine);
        ++wins;
      } catch (const JobStoreConflict&) {
        ++conflicts;
      }
    };
    std::thread a(writer, std::ref(*first), v1::JOB_STATE_RUNNING);
    std::thread b(writer, std::ref(*second), v1::JOB_STATE_CANCELLED);
    a.join();
    b.join();
    ASSERT_EQ(wins.load(), 1) << "round " << round;
    ASSERT_EQ(conflicts.load(), 1) << "round " << round;
    const StoredJob now = first->load_jobs().at(0);
    EXPECT_EQ(now.record.job().restart_count(), round + 1);
    EXPECT_GT(now.revision, base.revision);
  }
}

TEST_P(JobStoreContract, DeletedJobs_AreGone_AndTheirSequencesNeverReused) {
  auto store = open();
  put(*store, job("a"));
  const std::int64_t b = put(*store, job("b"));
  store->delete_job("b");
  store->delete_job("never-there");  // not an error
  EXPECT_EQ(ids(store->load_jobs()), std::vector<std::string>{"a"});
  // Newest-first listings rely on a new job always sorting after every earlier one.
  EXPECT_GT(put(*store, job("c")), b);
}

TEST_P(JobStoreContract, TheWholeRecord_RoundTrips) {
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

TEST_P(JobStoreContract, Sessions_ArePutReplacedAndDeleted_ListedByNodeName) {
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

TEST_P(JobStoreContract, Everything_SurvivesReopening) {
  std::int64_t b_sequence = 0;
  {
    auto store = open();
    put(*store, job("a", v1::JOB_STATE_SUCCEEDED, "req-a"));
    StoredJob b = job("b", v1::JOB_STATE_RUNNING);
    store->put_job(b);
    b.record.mutable_job()->set_restart_count(1);
    store->put_job(b);
    b_sequence = b.sequence;
    put(*store, job("c"));
    store->delete_job("c");
    store->put_session({.agent_id = "agent-1", .node_name = "node-a", .address = "10.0.0.1:7000", .slots = 4});
  }
  auto store = open();
  const auto jobs = store->load_jobs();
  ASSERT_EQ(ids(jobs), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(jobs[0].record.request_id(), "req-a");
  EXPECT_EQ(jobs[0].record.job().state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(jobs[1].record.job().restart_count(), 1);
  EXPECT_EQ(jobs[1].sequence, b_sequence);
  const auto sessions = store->load_sessions();
  ASSERT_EQ(sessions.size(), 1u);
  EXPECT_EQ(sessions[0].slots, 4);
  // The sequence carries on after the reopen, past the deleted job's.
  EXPECT_GT(put(*store, job("d")), b_sequence + 1);
}

// --- SQLite only ------------------------------------------------------------------------

class JobStoreTest : public ::testing::Test {
 protected:
  std::string path() const { return dir_ / "state.db"; }
  std::unique_ptr<JobStore> open() { return open_sqlite_job_store(path()); }

  ScopedTempDir dir_;
};

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
  StoredJob a = job("a");
  open()->put_job(a);
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
  StoredJob a = job("a"), b = job("b");
  first->put_job(a);
  first->put_job(b);
  EXPECT_LT(a.sequence, b.sequence);
  first->put_session({.agent_id = "agent-1", .node_name = "n", .address = "h:1", .slots = 1});
  EXPECT_EQ(ids(first->load_jobs()), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(first->load_sessions().size(), 1u);
  EXPECT_TRUE(second->load_jobs().empty());
  EXPECT_TRUE(second->load_sessions().empty());
  first->delete_job("a");
  EXPECT_EQ(ids(first->load_jobs()), std::vector<std::string>{"b"});
}

// A file from before jobs had revisions (no such column) opens, every job at revision 1,
// and takes compare-and-swap writes from there.
TEST_F(JobStoreTest, FileWithoutRevisions_GetsThem) {
  StoredJob a = job("a");
  open()->put_job(a);
  execute_sql(path(), "ALTER TABLE jobs DROP COLUMN revision");
  auto store = open();
  StoredJob loaded = store->load_jobs().at(0);
  EXPECT_EQ(loaded.revision, 1);
  loaded.record.mutable_job()->set_state(v1::JOB_STATE_RUNNING);
  store->put_job(loaded);
  EXPECT_EQ(loaded.revision, 2);
}

// --- etcd only --------------------------------------------------------------------------

class EtcdJobStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (const std::string why = fabric::testing::EtcdCluster::unavailable(); !why.empty()) GTEST_SKIP() << why;
    etcd_ = std::make_unique<fabric::testing::EtcdCluster>(dir_.path(), 1);
    client_ = std::make_shared<EtcdClient>(std::vector<std::string>{etcd_->endpoints()});
  }
  ScopedTempDir dir_;
  std::unique_ptr<fabric::testing::EtcdCluster> etcd_;
  std::shared_ptr<EtcdClient> client_;
};

// A store fenced by an election key writes while its coordinator leads, and nothing once
// the key is gone (another coordinator may lead): the write says so, and is not made.
TEST_F(EtcdJobStoreTest, FencedStore_WritesNothingOnceItsLeadershipIsGone) {
  auto election = std::make_unique<fabric::launcher::LeaderElection>(
      client_, fabric::launcher::LeaderElectionOptions{.name = "/fenced/leader", .address = "10.0.0.1:7070"});
  const auto fence = election->campaign();
  ASSERT_TRUE(fence);
  EXPECT_EQ(election->leader(), "10.0.0.1:7070");
  auto store = open_etcd_job_store(client_, "/fenced", fence);
  StoredJob a = job("a");
  store->put_job(a);
  election.reset();  // resigns: the election key is deleted
  a.record.mutable_job()->set_state(v1::JOB_STATE_RUNNING);
  try {
    store->put_job(a);
    FAIL() << "a deposed leader's write was made";
  } catch (const JobStoreConflict& error) {
    EXPECT_NE(std::string(error.what()).find("no longer leads"), std::string::npos) << error.what();
  }
  StoredSession session{.agent_id = "agent-1", .node_name = "n", .address = "h:1", .slots = 1};
  EXPECT_THROW(store->put_session(session), JobStoreConflict);
  const auto jobs = open_etcd_job_store(client_, "/fenced")->load_jobs();
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(jobs[0].record.job().state(), v1::JOB_STATE_PENDING);
  EXPECT_TRUE(open_etcd_job_store(client_, "/fenced")->load_sessions().empty());
}

// Of two campaigners the second waits while the first leads, names it, and leads once the
// first resigns.
TEST_F(EtcdJobStoreTest, SecondCampaigner_WaitsNamesTheLeader_AndLeadsWhenItResigns) {
  using fabric::launcher::LeaderElection;
  using fabric::launcher::LeaderElectionOptions;
  auto first = std::make_unique<LeaderElection>(client_, LeaderElectionOptions{.name = "/two/leader", .address = "first:1"});
  ASSERT_TRUE(first->campaign());
  LeaderElection second(client_, LeaderElectionOptions{.name = "/two/leader", .address = "second:1"});
  std::optional<fabric::launcher::EtcdFence> second_fence;
  std::thread campaigning([&] { second_fence = second.campaign(); });
  // Its view of the leader comes from etcd (refreshed every 250 ms): wait on it, bounded.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (second.leader() != "first:1" && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(second.leader(), "first:1");
  first.reset();
  campaigning.join();
  ASSERT_TRUE(second_fence);
  EXPECT_EQ(second.leader(), "second:1");
}

// A follower can wait for years: its lease is renewed all along, so that its campaign is
// still alive (its key not expired with the lease) when the leader goes.
TEST_F(EtcdJobStoreTest, Campaigner_WaitingLongerThanItsLease_KeepsItAndLeadsWhenTheLeaderResigns) {
  using fabric::launcher::LeaderElection;
  using fabric::launcher::LeaderElectionOptions;
  auto first = std::make_unique<LeaderElection>(
      client_, LeaderElectionOptions{.name = "/long/leader", .address = "first:1", .lease_ttl = std::chrono::seconds(2)});
  ASSERT_TRUE(first->campaign());
  LeaderElection second(client_, LeaderElectionOptions{.name = "/long/leader", .address = "second:1",
                                                       .lease_ttl = std::chrono::seconds(2)});
  std::optional<fabric::launcher::EtcdFence> second_fence;
  std::thread campaigning([&] { second_fence = second.campaign(); });
  // The second's campaign key, once it is there (bounded).
  const auto campaign_key_revision = [&]() -> std::int64_t {
    etcdserverpb::RangeRequest request;
    request.set_key("/long/leader/");
    request.set_range_end("/long/leader0");  // every key under the prefix
    const etcdserverpb::RangeResponse response = client_->range(request);
    for (const auto& kv : response.kvs()) {
      if (kv.value() == "second:1") return kv.create_revision();
    }
    return 0;
  };
  std::int64_t waiting_key = 0;
  for (int poll = 0; poll < 500 && waiting_key == 0; ++poll) {
    waiting_key = campaign_key_revision();
    if (waiting_key == 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_NE(waiting_key, 0);
  // Time itself is what is waited for here: more than two TTLs of the second's lease.
  std::this_thread::sleep_for(std::chrono::seconds(5));
  EXPECT_EQ(second.leader(), "first:1");
  EXPECT_EQ(campaign_key_revision(), waiting_key);
  first.reset();
  campaigning.join();
  ASSERT_TRUE(second_fence);
  EXPECT_EQ(second_fence->create_revision, waiting_key);  // the same campaign, never begun again
  EXPECT_EQ(second.leader(), "second:1");
}

TEST_F(EtcdJobStoreTest, NoMemberReachable_IsJobStoreUnavailableNamingTheEndpoints) {
  const std::string nowhere = "127.0.0.1:" + std::to_string(fabric::testing::free_port());
  auto store = open_etcd_job_store(std::make_shared<EtcdClient>(std::vector<std::string>{nowhere},
                                                                std::chrono::milliseconds(500)),
                                   "/x");
  StoredJob a = job("a");
  try {
    store->put_job(a);
    FAIL() << "wrote to nowhere";
  } catch (const JobStoreUnavailable& error) {
    EXPECT_NE(std::string(error.what()).find(nowhere), std::string::npos) << error.what();
  }
}

TEST(EtcdUrl, ParsesEndpointsAndPrefix_AndNamesWhatIsWrong) {
  using fabric::launcher::parse_etcd_url;
  const auto one = parse_etcd_url("etcd://10.0.0.1:2379");
  EXPECT_EQ(one.endpoints, std::vector<std::string>{"10.0.0.1:2379"});
  EXPECT_EQ(one.prefix, "/fabricd");
  const auto three = parse_etcd_url("etcd://a:2379,b:2379,c:2379/team-a/");
  EXPECT_EQ(three.endpoints, (std::vector<std::string>{"a:2379", "b:2379", "c:2379"}));
  EXPECT_EQ(three.prefix, "/team-a");
  for (const std::string bad : {"sqlite:/x", "etcd://", "etcd://a", "etcd://a:b", "etcd://a:1,", "etcd://a:1//"}) {
    EXPECT_THROW(parse_etcd_url(bad), std::invalid_argument) << bad;
  }
}

}  // namespace
