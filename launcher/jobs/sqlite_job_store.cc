// The embedded JobStore: one SQLite file. Jobs are kept as their serialized Job message
// beside the columns queries need; every write is one transaction, durable on return
// (WAL journal, synchronous=FULL), so a coordinator killed at any instant restarts with
// every job it had acknowledged. Each job row carries a revision, bumped by every write and
// compared by it (UPDATE … WHERE revision = ?), which is the compare-and-swap JobStore asks.
#include <sqlite3.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mutex>

#include "jobs/job_store.h"

namespace fabric::launcher {
namespace {

constexpr const char* kInMemory = ":memory:";  // SQLite's name for a database in memory only

class Statement {
 public:
  Statement(sqlite3* db, const char* sql) : db_(db) {
    if (sqlite3_prepare_v2(db, sql, -1, &statement_, nullptr) != SQLITE_OK) fail("prepare");
  }
  ~Statement() { sqlite3_finalize(statement_); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  Statement& bind(int index, const std::string& text) {
    sqlite3_bind_text(statement_, index, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Statement& bind_blob(int index, const std::string& bytes) {
    sqlite3_bind_blob(statement_, index, bytes.data(), static_cast<int>(bytes.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Statement& bind(int index, std::int64_t value) {
    sqlite3_bind_int64(statement_, index, value);
    return *this;
  }
  // true while there is a row.
  bool step() {
    const int code = sqlite3_step(statement_);
    if (code == SQLITE_ROW) return true;
    if ((code & 0xff) == SQLITE_CONSTRAINT) throw JobStoreConflict(std::string("job store: ") + sqlite3_errmsg(db_));
    if (code != SQLITE_DONE) fail("step");
    return false;
  }
  std::string text(int column) const {
    const auto* data = static_cast<const char*>(sqlite3_column_blob(statement_, column));
    return data ? std::string(data, static_cast<std::size_t>(sqlite3_column_bytes(statement_, column))) : std::string();
  }
  std::int64_t integer(int column) const { return sqlite3_column_int64(statement_, column); }

 private:
  [[noreturn]] void fail(const char* what) const {
    throw JobStoreError(std::string("job store: ") + what + " failed: " + sqlite3_errmsg(db_));
  }
  sqlite3* db_;
  sqlite3_stmt* statement_ = nullptr;
};

class SqliteJobStore final : public JobStore {
 public:
  explicit SqliteJobStore(const std::string& path) {
    // The records hold the jobs' secrets: the file is its owner's alone, from its creation
    // on (SQLite gives its -wal and -shm files the same mode).
    if (path != kInMemory) {
      if (const int fd = ::open(path.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600); fd >= 0) ::close(fd);
      ::chmod(path.c_str(), 0600);
    }
    if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                        nullptr) != SQLITE_OK) {
      const std::string reason = db_ ? sqlite3_errmsg(db_) : "out of memory";
      sqlite3_close(db_);
      throw JobStoreError("cannot open the job store " + path + ": " + reason +
                          " (is --state a writable directory?)");
    }
    sqlite3_busy_timeout(db_, 5000);
    try {
      execute("PRAGMA journal_mode=WAL");
      execute("PRAGMA synchronous=FULL");
      execute(
          "CREATE TABLE IF NOT EXISTS jobs (sequence INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT UNIQUE NOT NULL, "
          "request_id TEXT NOT NULL, job BLOB NOT NULL, revision INTEGER NOT NULL DEFAULT 1)");
      add_revision_column();
      execute(
          "CREATE TABLE IF NOT EXISTS sessions (agent_id TEXT PRIMARY KEY, node_name TEXT NOT NULL, "
          "address TEXT NOT NULL, slots INTEGER NOT NULL)");
    } catch (...) {  // e.g. the file is not a database: the destructor will not run
      sqlite3_close(db_);
      throw;
    }
  }
  ~SqliteJobStore() override { sqlite3_close(db_); }

  void put_job(StoredJob& stored) override {
    std::lock_guard lock(mutex_);
    std::string blob;
    stored.record.SerializeToString(&blob);
    const std::string& job_id = stored.record.job().job_id();
    const std::string& request_id = stored.record.request_id();
    if (stored.revision == 0) {
      Statement insert(db_, "INSERT INTO jobs (job_id, request_id, job, revision) VALUES (?, ?, ?, 1)");
      insert.bind(1, job_id).bind(2, request_id).bind_blob(3, blob).step();  // a taken job_id: JobStoreConflict
      stored.sequence = sqlite3_last_insert_rowid(db_);
      stored.revision = 1;
      return;
    }
    // One statement, so atomic against every other connection to the file.
    Statement update(db_, "UPDATE jobs SET request_id = ?, job = ?, revision = revision + 1 WHERE job_id = ? AND revision = ?");
    update.bind(1, request_id).bind_blob(2, blob).bind(3, job_id).bind(4, stored.revision).step();
    if (sqlite3_changes(db_) == 0) {
      throw JobStoreConflict("job store: job " + job_id + " is no longer at revision " +
                             std::to_string(stored.revision) + ": another writer changed or deleted it");
    }
    ++stored.revision;
  }

  void delete_job(const std::string& job_id) override {
    std::lock_guard lock(mutex_);
    Statement(db_, "DELETE FROM jobs WHERE job_id = ?").bind(1, job_id).step();
  }

  std::vector<StoredJob> load_jobs() override {
    std::lock_guard lock(mutex_);
    std::vector<StoredJob> jobs;
    Statement select(db_, "SELECT sequence, job, revision FROM jobs ORDER BY sequence");
    while (select.step()) {
      StoredJob stored{.sequence = select.integer(0), .revision = select.integer(2)};
      if (!stored.record.ParseFromString(select.text(1))) {
        throw JobStoreError("job store: job #" + std::to_string(stored.sequence) + " does not parse as fabric.v1.JobRecord");
      }
      jobs.push_back(std::move(stored));
    }
    return jobs;
  }

  void put_session(const StoredSession& session) override {
    std::lock_guard lock(mutex_);
    Statement(db_, "INSERT OR REPLACE INTO sessions (agent_id, node_name, address, slots) VALUES (?, ?, ?, ?)")
        .bind(1, session.agent_id)
        .bind(2, session.node_name)
        .bind(3, session.address)
        .bind(4, std::int64_t{session.slots})
        .step();
  }

  void delete_session(const std::string& agent_id) override {
    std::lock_guard lock(mutex_);
    Statement(db_, "DELETE FROM sessions WHERE agent_id = ?").bind(1, agent_id).step();
  }

  std::vector<StoredSession> load_sessions() override {
    std::lock_guard lock(mutex_);
    std::vector<StoredSession> sessions;
    Statement select(db_, "SELECT agent_id, node_name, address, slots FROM sessions ORDER BY node_name");
    while (select.step()) {
      sessions.push_back({.agent_id = select.text(0),
                          .node_name = select.text(1),
                          .address = select.text(2),
                          .slots = static_cast<std::int32_t>(select.integer(3))});
    }
    return sessions;
  }

 private:
  // A file written before jobs had revisions gets the column (every job at revision 1).
  void add_revision_column() {
    Statement columns(db_, "SELECT 1 FROM pragma_table_info('jobs') WHERE name = 'revision'");
    if (!columns.step()) execute("ALTER TABLE jobs ADD COLUMN revision INTEGER NOT NULL DEFAULT 1");
  }

  void execute(const char* sql) {
    char* error = nullptr;
    if (sqlite3_exec(db_, sql, nullptr, nullptr, &error) != SQLITE_OK) {
      const std::string reason = error ? error : "unknown error";
      sqlite3_free(error);
      throw JobStoreError(std::string("job store: ") + sql + ": " + reason);
    }
  }

  std::mutex mutex_;
  sqlite3* db_ = nullptr;
};

}  // namespace

std::unique_ptr<JobStore> open_sqlite_job_store(const std::string& path) { return std::make_unique<SqliteJobStore>(path); }
std::unique_ptr<JobStore> in_memory_job_store() { return std::make_unique<SqliteJobStore>(kInMemory); }

}  // namespace fabric::launcher
