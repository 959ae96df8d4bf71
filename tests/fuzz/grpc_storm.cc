// grpc_storm: a gRPC-level fuzzer against a live fabricd. It starts the daemon, sends it
// tens of thousands of random and malformed messages on every JobService and AgentService
// method (and on methods that do not exist), checks after each batch that the daemon still
// answers a valid ListJobs, and compares the daemon's resident memory after a warm-up (the
// first third of the messages) with the end.
//
//   grpc_storm --fabricd PATH [--mode serve|run|all] [--messages 30000] [--batch 1000]
//              [--threads 8] [--seed N] [--max-rss-growth 1.5] [--raw-malloc]
//
//   serve  fabricd serve --insecure --listen 127.0.0.1:0 --local-agent 1 --history 20
//   run    fabricd run --serve 127.0.0.1:0 --insecure -- /bin/sleep 100000
//
// Each message is one of: random bytes; a valid request with random fields (ids mostly from
// earlier answers, so that real jobs and agent sessions are hit); a valid request cut short;
// a valid request with random bytes flipped; a valid request with one huge string (64 KiB to
// 5 MiB, past the daemon's 4 MiB limit); random bytes to a method that does not exist.
// Streams are read for a few messages and cancelled; PushLogs gets several messages.
//
// Prints one JSON line per mode:
//   {"mode":"serve","messages":30000,"answered":..,"liveness_checks":..,"rss_start_kb":..,
//    "rss_end_kb":..,"rss_growth_ratio":..,"max_rss_growth":1.5,"seconds":..}
// "answered": calls that got a response or a status from the daemon (not a deadline or a
// transport failure; a stream that stays silent until its deadline is legitimately not).
// Exits 1 when the daemon died, stopped answering ListJobs, exited uncleanly when stopped
// (e.g. a sanitizer report), or its RSS grew by more than --max-rss-growth.
//
// The daemon runs in a temporary directory (it is also its cwd, where specs' relative log
// dirs land) with PATH pointing at an empty folder there, and valid specs name programs that
// do not exist, so nothing the storm submits ever runs. Valid specs keep max_restarts <= 2
// and huge strings go only into requests the daemon refuses or does not keep: what a
// coordinator retains by design (up to --history finished jobs, their specs included, and a
// job's every event until it ends) is bounded by counts, which the daemon flags keep small
// (--history 20) so that the warm-up reaches the plateau and growth after it is a leak.
#include <fcntl.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <google/protobuf/stubs/logging.h>

#include "fabric/v1/agent.pb.h"
#include "fabric/v1/job.pb.h"

namespace {

namespace v1 = fabric::v1;
using Clock = std::chrono::steady_clock;

struct Options {
  std::string fabricd;
  std::string mode = "serve";
  long messages = 30000;
  long batch = 1000;
  int threads = 8;
  std::uint64_t seed = 1;
  double max_rss_growth = 1.5;
  bool raw_malloc = false;
};

[[noreturn]] void usage(const std::string& problem) {
  std::cerr << "grpc_storm: " << problem
            << "\nusage: grpc_storm --fabricd PATH [--mode serve|run|all] [--messages N] [--batch N] [--threads N] "
               "[--seed N] [--max-rss-growth R] [--raw-malloc]\n";
  std::exit(2);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--raw-malloc") {
      o.raw_malloc = true;
      continue;
    }
    if (i + 1 >= argc) usage("missing value after " + flag);
    const std::string value = argv[++i];
    try {
      if (flag == "--fabricd") o.fabricd = value;
      else if (flag == "--mode") o.mode = value;
      else if (flag == "--messages") o.messages = std::stol(value);
      else if (flag == "--batch") o.batch = std::stol(value);
      else if (flag == "--threads") o.threads = std::stoi(value);
      else if (flag == "--seed") o.seed = std::stoull(value);
      else if (flag == "--max-rss-growth") o.max_rss_growth = std::stod(value);
      else usage("unknown flag " + flag);
    } catch (const std::logic_error&) {
      usage("bad value for " + flag + ": " + value);
    }
  }
  if (o.fabricd.empty()) usage("--fabricd is required");
  if (o.mode != "serve" && o.mode != "run" && o.mode != "all") usage("--mode is serve, run or all");
  if (o.messages < 1 || o.batch < 1 || o.threads < 1) usage("--messages, --batch and --threads must be positive");
  return o;
}

// --- The daemon -----------------------------------------------------------------------

class Daemon {
 public:
  Daemon(const std::string& fabricd, const std::string& mode, bool raw_malloc) {
    char dir_template[] = "/tmp/grpc_storm.XXXXXX";
    if (!::mkdtemp(dir_template)) throw std::runtime_error("mkdtemp failed");
    dir_ = dir_template;
    std::filesystem::create_directories(dir_ + "/bin");  // the daemon's PATH: empty
    log_ = dir_ + "/fabricd.log";
    std::vector<std::string> args = {fabricd};
    if (mode == "serve") {
      args.insert(args.end(), {"serve", "--insecure", "--listen", "127.0.0.1:0", "--local-agent", "1", "--history",
                               "20", "--max-pending-per-user", "20"});
    } else {
      args.insert(args.end(), {"run", "--serve", "127.0.0.1:0", "--insecure", "--", "/bin/sleep", "100000"});
    }
    const std::string path_env = "PATH=" + dir_ + "/bin";
    // A sanitized daemon: a small quarantine, so that its RSS is what it keeps, not what ASan
    // keeps for it (256 MiB by default). Harmless to any other.
    const char* asan = std::getenv("ASAN_OPTIONS");
    std::string asan_env = std::string("ASAN_OPTIONS=") + (asan ? asan : "");
    if (asan_env.find("quarantine_size_mb") == std::string::npos) {
      asan_env += std::string(asan && *asan ? ":" : "") + "quarantine_size_mb=16";
    }
    // glibc's malloc raises its mmap threshold after the first large free, and from then on
    // keeps the storm's multi-MiB buffers in per-thread arenas it never gives back: RSS would
    // measure the allocator, not the daemon. A fixed threshold puts every buffer of 128 KiB
    // or more in an mmap of its own, unmapped when freed (--raw-malloc: glibc's defaults).
    const std::string malloc_env = raw_malloc ? std::string() : "MALLOC_MMAP_THRESHOLD_=131072";
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      const int fd = ::open(log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      if (::chdir(dir_.c_str()) != 0) ::_exit(126);
      ::putenv(const_cast<char*>(path_env.c_str()));
      ::putenv(const_cast<char*>(asan_env.c_str()));
      if (!malloc_env.empty()) ::putenv(const_cast<char*>(malloc_env.c_str()));
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
  }

  ~Daemon() {
    if (pid_ > 0 && !exited_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    std::error_code ignored;
    if (!keep_) std::filesystem::remove_all(dir_, ignored);
  }

  // The address from the daemon's "listening on ADDR" (serve) or "serving JobService for
  // job ID on ADDR" (run --serve) line; empty when it did not come within the timeout.
  std::string wait_for_address(std::chrono::seconds timeout) {
    const auto until = Clock::now() + timeout;
    while (Clock::now() < until && alive()) {
      std::ifstream in(log_);
      std::string line;
      while (std::getline(in, line)) {
        if (line.find("listening on ") != std::string::npos ||
            line.find("serving JobService for job") != std::string::npos) {
          job_line_ = line;
          return line.substr(line.rfind(' ') + 1);
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return "";
  }

  bool alive() {
    if (exited_) return false;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      exited_ = true;
      status_ = status;
      return false;
    }
    return true;
  }

  long rss_kb() const {
    std::ifstream in("/proc/" + std::to_string(pid_) + "/status");
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
    }
    return -1;
  }

  // SIGTERM, then the exit status: whether it stopped as a daemon should (0, or 128+15 for
  // `run`, whose job it stops) within 20 s.
  bool stop_cleanly(std::string& how) {
    if (!alive()) {
      how = describe(status_) + " before it was stopped";
      return false;
    }
    ::kill(pid_, SIGTERM);
    const auto until = Clock::now() + std::chrono::seconds(20);
    while (Clock::now() < until && alive()) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    if (!exited_) {
      how = "did not exit within 20 s of SIGTERM";
      return false;
    }
    how = describe(status_);
    return WIFEXITED(status_) && (WEXITSTATUS(status_) == 0 || WEXITSTATUS(status_) == 128 + SIGTERM);
  }

  std::string tail(std::size_t lines) const {
    std::ifstream in(log_);
    std::vector<std::string> all;
    std::string line;
    while (std::getline(in, line)) all.push_back(line.substr(0, 400));
    std::string out;
    for (std::size_t i = all.size() > lines ? all.size() - lines : 0; i < all.size(); ++i) out += all[i] + "\n";
    return out;
  }

  void keep() { keep_ = true; }

  // Where every thread of a daemon that stopped answering is (gdb, when there is one), for
  // the kept folder; returns the file, or "" when there is no gdb or no daemon.
  std::string dump_stacks() {
    if (!alive() || std::system("command -v gdb >/dev/null 2>&1") != 0) return "";
    const std::string file = dir_ + "/stacks.txt";
    const std::string command = "gdb -p " + std::to_string(pid_) + " -batch -ex 'thread apply all bt' >" + file + " 2>&1";
    return std::system(command.c_str()) == 0 ? file : "";
  }
  const std::string& dir() const { return dir_; }
  const std::string& job_line() const { return job_line_; }

 private:
  static std::string describe(int status) {
    if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
    if (WIFSIGNALED(status)) return std::string("was killed by signal ") + std::to_string(WTERMSIG(status));
    return "ended";
  }

  std::string dir_, log_, job_line_;
  pid_t pid_ = -1;
  bool exited_ = false, keep_ = false;
  int status_ = 0;
};

// --- Messages -------------------------------------------------------------------------

enum class Kind { kUnary, kServerStream, kClientStream };

struct Method {
  const char* path;
  Kind kind;
};

const std::vector<Method> kMethods = {
    {"/fabric.v1.JobService/SubmitJob", Kind::kUnary},
    {"/fabric.v1.JobService/GetJob", Kind::kUnary},
    {"/fabric.v1.JobService/ListJobs", Kind::kUnary},
    {"/fabric.v1.JobService/CancelJob", Kind::kUnary},
    {"/fabric.v1.JobService/WatchJob", Kind::kServerStream},
    {"/fabric.v1.JobService/StreamLogs", Kind::kServerStream},
    {"/fabric.v1.AgentService/Register", Kind::kUnary},
    {"/fabric.v1.AgentService/Heartbeat", Kind::kUnary},
    {"/fabric.v1.AgentService/StreamAssignments", Kind::kServerStream},
    {"/fabric.v1.AgentService/ReportRankExit", Kind::kUnary},
    {"/fabric.v1.AgentService/PushLogs", Kind::kClientStream},
};

// Ids the daemon has given out, shared by the threads.
class Pools {
 public:
  void add_job(const std::string& id) { add(jobs_, id); }
  void add_agent(const std::string& id) { add(agents_, id); }
  std::string job(std::mt19937_64& random) { return pick(jobs_, random); }
  std::string agent(std::mt19937_64& random) { return pick(agents_, random); }
  // `run` mode: the one job, which a CancelJob must not end (the daemon would exit).
  void protect(const std::string& id) {
    std::lock_guard lock(mutex_);
    protected_ = id;
  }
  bool is_protected(const std::string& id) {
    std::lock_guard lock(mutex_);
    return !protected_.empty() && id == protected_;
  }

 private:
  void add(std::vector<std::string>& pool, const std::string& id) {
    if (id.empty()) return;
    std::lock_guard lock(mutex_);
    if (pool.size() < 64) {
      pool.push_back(id);
    } else {
      pool[std::hash<std::string>()(id) % pool.size()] = id;
    }
  }
  std::string pick(std::vector<std::string>& pool, std::mt19937_64& random) {
    std::lock_guard lock(mutex_);
    if (pool.empty()) return "none";
    return pool[random() % pool.size()];
  }
  std::mutex mutex_;
  std::vector<std::string> jobs_, agents_;
  std::string protected_;
};

class Generator {
 public:
  Generator(std::uint64_t seed, Pools& pools, bool run_mode) : random_(seed), pools_(pools), run_mode_(run_mode) {}

  std::uint64_t below(std::uint64_t n) { return random_() % n; }
  bool chance(int percent) { return static_cast<int>(below(100)) < percent; }

  std::string bytes(std::size_t max) {
    std::string out(below(max + 1), '\0');
    for (char& c : out) c = static_cast<char>(random_());
    return out;
  }
  std::string text(std::size_t max) {
    static const char kChars[] = "abcdefghijklmnopqrstuvwxyz0123456789-_./: =";
    std::string out(below(max + 1), 'a');
    for (char& c : out) c = kChars[below(sizeof(kChars) - 1)];
    return out;
  }
  std::string any_string(std::size_t max) { return chance(70) ? text(max) : bytes(max); }
  std::int32_t int32() {
    switch (below(6)) {
      case 0: return -1;
      case 1: return std::numeric_limits<std::int32_t>::max();
      case 2: return std::numeric_limits<std::int32_t>::min();
      case 3: return static_cast<std::int32_t>(random_());
      default: return static_cast<std::int32_t>(below(5));
    }
  }
  std::int32_t small(std::int32_t n) { return chance(85) ? static_cast<std::int32_t>(below(static_cast<std::uint64_t>(n) + 1)) : int32(); }
  void duration(google::protobuf::Duration& d) {
    if (chance(60)) {
      d.set_seconds(static_cast<std::int64_t>(below(30)));
    } else {
      d.set_seconds(static_cast<std::int64_t>(random_()));
      d.set_nanos(static_cast<std::int32_t>(random_()));
    }
  }
  std::string job_id() { return chance(60) ? pools_.job(random_) : any_string(24); }
  std::string agent_id() { return chance(60) ? pools_.agent(random_) : any_string(24); }

  // A spec that names no real program. `keepable`: it may validate (so is kept by the
  // coordinator); otherwise it is made invalid, so that a huge string in it is refused.
  void spec(v1::JobSpec& s, bool keepable) {
    s.set_name(text(24));
    s.set_program(chance(90) ? "/nonexistent-storm/" + text(12) : std::string());
    for (auto n = below(3); n > 0; --n) s.add_args(any_string(16));
    for (auto n = below(3); n > 0; --n) (*s.mutable_env())["STORM_" + text(8)] = any_string(16);
    if (chance(20)) s.set_working_dir("wd/" + text(8));
    s.set_nproc_per_node(small(2));
    s.set_num_nodes(small(2));
    s.set_min_nodes(small(2));
    s.set_max_restarts(static_cast<std::int32_t>(below(3)));
    if (chance(30)) duration(*s.mutable_heartbeat_timeout());
    if (chance(30)) duration(*s.mutable_rdzv_timeout());
    if (chance(30)) duration(*s.mutable_grace_period());
    if (chance(30)) {
      auto& log = *s.mutable_log();
      log.set_tail_lines(small(50));
      log.set_redirect(static_cast<v1::Streams>(small(3)));
      log.set_tee(static_cast<v1::Streams>(small(3)));
      if (chance(50)) log.set_dir("logs/" + text(8));
    }
    if (!keepable) s.set_nproc_per_node(-1 - static_cast<std::int32_t>(below(5)));
  }

  // A valid request of `method` with random fields; `huge` puts one huge string where the
  // daemon refuses it or does not keep it.
  std::string valid(std::size_t method, bool huge) {
    const std::string big = huge ? std::string(64 * 1024 + below(5 * 1024 * 1024), 'h') : std::string();
    switch (method) {
      case 0: {
        v1::SubmitJobRequest r;
        spec(*r.mutable_spec(), !huge);
        if (huge) r.mutable_spec()->set_name(big);
        if (chance(30)) r.set_request_id(text(8));
        return r.SerializeAsString();
      }
      case 1: {
        v1::GetJobRequest r;
        r.set_job_id(huge ? big : job_id());
        return r.SerializeAsString();
      }
      case 2: {
        v1::ListJobsRequest r;
        for (auto n = below(3); n > 0; --n) r.add_states(static_cast<v1::JobState>(small(6)));
        r.set_page_size(small(10));
        if (chance(30)) r.set_page_token(huge ? big : any_string(24));
        return r.SerializeAsString();
      }
      case 3: {
        v1::CancelJobRequest r;
        std::string id = job_id();
        if (run_mode_ && pools_.is_protected(id)) id = "not-" + id;
        r.set_job_id(huge ? "no-such-job" : id);
        if (chance(50)) duration(*r.mutable_grace_period());
        r.set_reason(huge ? big : text(24));
        return r.SerializeAsString();
      }
      case 4: {
        v1::WatchJobRequest r;
        r.set_job_id(huge ? big : job_id());
        return r.SerializeAsString();
      }
      case 5: {
        v1::StreamLogsRequest r;
        r.set_job_id(huge ? big : job_id());
        for (auto n = below(3); n > 0; --n) r.add_ranks(small(4));
        r.set_stream(static_cast<v1::LogStream>(small(2)));
        r.set_tail_lines(chance(20) ? -1 - static_cast<std::int32_t>(below(2)) : small(10));
        r.set_follow(chance(50));
        return r.SerializeAsString();
      }
      case 6: {
        v1::RegisterRequest r;
        r.set_node_name(huge ? std::string() : "storm-" + text(8));  // empty: refused
        r.set_address(huge ? big : "127.0.0.1:" + std::to_string(1 + below(65535)));
        r.set_slots(small(4));
        r.set_agent_version(text(8));
        r.set_free_port(small(65535));
        return r.SerializeAsString();
      }
      case 7: {
        v1::AgentHeartbeatRequest r;
        r.set_agent_id(huge ? big : agent_id());
        for (auto n = below(3); n > 0; --n) {
          auto& running = *r.add_running();
          running.set_job_id(job_id());
          running.set_generation(small(3));
          running.add_ranks(small(4));
        }
        r.set_free_port(small(65535));
        return r.SerializeAsString();
      }
      case 8: {
        v1::StreamAssignmentsRequest r;
        r.set_agent_id(huge ? big : agent_id());
        return r.SerializeAsString();
      }
      case 9: {
        v1::ReportRankExitRequest r;
        r.set_agent_id(huge ? "no-such-agent" : agent_id());
        r.set_job_id(job_id());
        auto& exit = *r.mutable_exit();
        exit.set_rank(small(4));
        exit.set_local_rank(small(4));
        exit.set_generation(small(3));
        exit.set_cause(static_cast<v1::RankExit::Cause>(small(6)));
        if (chance(50)) exit.set_exit_code(small(3)); else exit.set_signal(small(15));
        exit.add_stderr_tail(huge ? big : any_string(40));
        if (chance(30)) exit.mutable_reported_error()->set_message(any_string(40));
        return r.SerializeAsString();
      }
      default: {
        v1::PushLogsRequest r;
        r.set_agent_id(huge ? "no-such-agent" : agent_id());
        for (auto n = below(4); n > 0; --n) {
          auto& line = *r.add_lines();
          line.set_job_id(job_id());
          line.set_rank(small(4));
          line.set_stream(static_cast<v1::LogStream>(small(2)));
          line.set_text(huge ? big : any_string(60));
        }
        return r.SerializeAsString();
      }
    }
  }

  // One message for `method`, of a random kind.
  std::string message(std::size_t method, std::string& kind) {
    const auto roll = below(100);
    if (roll < 25) {
      kind = "random";
      return bytes(512);
    }
    if (roll < 60) {
      kind = "valid";
      return valid(method, false);
    }
    if (roll < 75) {
      kind = "truncated";
      std::string m = valid(method, false);
      return m.substr(0, m.empty() ? 0 : below(m.size()));
    }
    if (roll < 92) {
      kind = "mutated";
      std::string m = valid(method, false);
      for (auto flips = 1 + below(4); flips > 0 && !m.empty(); --flips) m[below(m.size())] ^= static_cast<char>(1 + below(255));
      return m;
    }
    kind = "huge";
    return valid(method, true);
  }

 private:
  std::mt19937_64 random_;
  Pools& pools_;
  bool run_mode_;
};

// --- Calls ----------------------------------------------------------------------------

struct Outcome {
  bool answered = false;  // a response or a status from the daemon
  grpc::Status status;
  std::vector<std::string> responses;
};

bool next(grpc::CompletionQueue& queue) {
  void* tag = nullptr;
  bool ok = false;
  return queue.Next(&tag, &ok) && ok;
}

// One call of `method` with raw request bytes: every message written, then responses read
// until the call ends, or cancelled after `max_reads` of them (a stream that goes on).
Outcome call(grpc::GenericStub& stub, const std::string& method, const std::vector<std::string>& messages,
             int deadline_ms, int max_reads) {
  Outcome out;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(deadline_ms));
  grpc::CompletionQueue queue;
  auto stream = stub.PrepareCall(&context, method, &queue);
  void* tag = reinterpret_cast<void*>(1);
  stream->StartCall(tag);
  bool open = next(queue);
  for (const std::string& message : messages) {
    if (!open) break;
    grpc::Slice slice(message);
    grpc::ByteBuffer buffer(&slice, 1);
    stream->Write(buffer, tag);
    open = next(queue);
  }
  if (open) {
    stream->WritesDone(tag);
    open = next(queue);
  }
  int reads = 0;
  bool ended = false;
  while (reads < max_reads) {
    grpc::ByteBuffer response;
    stream->Read(&response, tag);
    if (!next(queue)) {
      ended = true;
      break;
    }
    ++reads;
    std::vector<grpc::Slice> slices;
    if (response.Dump(&slices).ok()) {
      std::string bytes;
      for (const auto& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
      out.responses.push_back(std::move(bytes));
    }
  }
  if (!ended) context.TryCancel();
  stream->Finish(&out.status, tag);
  (void)next(queue);
  queue.Shutdown();
  void* ignored_tag = nullptr;
  bool ignored_ok = false;
  while (queue.Next(&ignored_tag, &ignored_ok)) {
  }
  const auto code = out.status.error_code();
  out.answered = reads > 0 || (code != grpc::StatusCode::DEADLINE_EXCEEDED && code != grpc::StatusCode::UNAVAILABLE &&
                               code != grpc::StatusCode::CANCELLED);
  return out;
}

struct Counters {
  std::atomic<long> sent{0}, answered{0};
};

void storm_batch(const std::string& address, long count, std::uint64_t seed, Pools& pools, bool run_mode, int threads,
                 Counters& counters) {
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    const long share = count / threads + (t < count % threads ? 1 : 0);
    workers.emplace_back([&, t, share] {
      grpc::ChannelArguments args;
      args.SetMaxSendMessageSize(-1);
      args.SetMaxReceiveMessageSize(-1);
      auto channel = grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
      grpc::GenericStub stub(channel);
      Generator gen(seed * 7919 + static_cast<std::uint64_t>(t), pools, run_mode);
      for (long i = 0; i < share; ++i) {
        std::string kind;
        std::string method_path;
        std::vector<std::string> messages;
        std::size_t method = gen.below(kMethods.size());
        Kind method_kind = kMethods[method].kind;
        if (gen.chance(4)) {
          method_path = gen.chance(50) ? "/fabric.v1.JobService/" + gen.text(12) : "/" + gen.text(20);
          method_kind = Kind::kUnary;
          messages.push_back(gen.bytes(256));
        } else {
          method_path = kMethods[method].path;
          messages.push_back(gen.message(method, kind));
          if (method_kind == Kind::kClientStream) {
            for (auto n = gen.below(4); n > 0; --n) messages.push_back(gen.message(method, kind));
          }
        }
        const bool streaming = method_kind == Kind::kServerStream;
        const Outcome outcome = call(stub, method_path, messages, streaming ? 20 + static_cast<int>(gen.below(80)) : 5000,
                                     streaming ? static_cast<int>(gen.below(4)) + 1 : 2);
        ++counters.sent;
        if (outcome.answered) ++counters.answered;
        if (!outcome.status.ok() || outcome.responses.empty()) continue;
        // Learn the ids the daemon gives out, for later valid requests.
        const std::string& response = outcome.responses.front();
        if (method_path == "/fabric.v1.JobService/SubmitJob") {
          v1::SubmitJobResponse r;
          if (r.ParseFromString(response)) pools.add_job(r.job().job_id());
        } else if (method_path == "/fabric.v1.JobService/ListJobs") {
          v1::ListJobsResponse r;
          if (r.ParseFromString(response)) {
            for (const auto& job : r.jobs()) pools.add_job(job.job_id());
          }
        } else if (method_path == "/fabric.v1.AgentService/Register") {
          v1::RegisterResponse r;
          if (r.ParseFromString(response)) pools.add_agent(r.agent_id());
        }
      }
    });
  }
  for (auto& worker : workers) worker.join();
}

// A valid ListJobs, answered OK within 10 s (three tries).
bool lists_jobs(const std::string& address, Pools& pools, bool run_mode) {
  auto channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  grpc::GenericStub stub(channel);
  for (int attempt = 0; attempt < 3; ++attempt) {
    v1::ListJobsRequest request;
    const Outcome outcome = call(stub, "/fabric.v1.JobService/ListJobs", {request.SerializeAsString()}, 10000, 2);
    v1::ListJobsResponse response;
    if (outcome.status.ok() && !outcome.responses.empty() && response.ParseFromString(outcome.responses.front())) {
      for (const auto& job : response.jobs()) {
        pools.add_job(job.job_id());
        if (run_mode) pools.protect(job.job_id());
      }
      return true;
    }
    std::cerr << "grpc_storm: ListJobs failed (" << outcome.status.error_code() << " "
              << outcome.status.error_message() << ")" << std::endl;
    std::this_thread::sleep_for(std::chrono::seconds(1));
  }
  return false;
}

int storm(const Options& options, const std::string& mode) {
  const auto started = Clock::now();
  const bool run_mode = mode == "run";
  Daemon daemon(options.fabricd, mode, options.raw_malloc);
  const std::string address = daemon.wait_for_address(std::chrono::seconds(60));
  auto fail = [&](const std::string& why) {
    daemon.keep();
    if (const std::string stacks = daemon.dump_stacks(); !stacks.empty()) {
      std::cerr << "grpc_storm: the daemon's threads are in " << stacks << "\n";
    }
    std::cerr << "grpc_storm: " << mode << ": " << why << "\nthe daemon's log (" << daemon.dir()
              << "/fabricd.log) ends:\n"
              << daemon.tail(40);
    return 1;
  };
  if (address.empty()) return fail("the daemon printed no address within 60 s");
  Pools pools;
  if (!lists_jobs(address, pools, run_mode)) return fail("the daemon does not answer ListJobs before the storm");

  Counters counters;
  long checks = 0;
  // The baseline RSS is taken after a third of the storm, not after its first batch: the
  // allocator's arenas and gRPC's pools keep growing for a while before they plateau (a
  // first-batch baseline measured 1.25x and 1.59x on two runs of the same tree), while a
  // leak keeps growing through the remaining two thirds.
  const long warmup = std::min(options.messages, std::max(options.batch, options.messages / 3));
  long rss_start = 0;
  std::uint64_t batch_seed = options.seed;
  bool first = true;
  for (long left = options.messages; left > 0;) {
    const long count = first ? warmup : std::min(options.batch, left);
    storm_batch(address, count, batch_seed++, pools, run_mode, options.threads, counters);
    left -= count;
    if (!daemon.alive()) return fail("the daemon died after " + std::to_string(counters.sent.load()) + " messages");
    if (!lists_jobs(address, pools, run_mode)) {
      return fail("the daemon stopped answering ListJobs after " + std::to_string(counters.sent.load()) + " messages");
    }
    ++checks;
    if (first) {
      rss_start = daemon.rss_kb();
      first = false;
    }
  }
  // Streams the storm left behind end within the daemon's poll intervals (5 s at most).
  std::this_thread::sleep_for(std::chrono::seconds(6));
  if (!lists_jobs(address, pools, run_mode)) return fail("the daemon stopped answering ListJobs at the end");
  ++checks;
  const long rss_end = daemon.rss_kb();
  const double ratio = rss_start > 0 ? static_cast<double>(rss_end) / static_cast<double>(rss_start) : 0.0;
  std::string how;
  const bool clean = daemon.stop_cleanly(how);
  const double seconds = std::chrono::duration<double>(Clock::now() - started).count();
  std::printf(
      "{\"mode\":\"%s\",\"messages\":%ld,\"answered\":%ld,\"liveness_checks\":%ld,\"rss_start_kb\":%ld,"
      "\"rss_end_kb\":%ld,\"rss_growth_ratio\":%.3f,\"max_rss_growth\":%.2f,\"seconds\":%.1f,\"daemon_exit\":\"%s\"}\n",
      mode.c_str(), counters.sent.load(), counters.answered.load(), checks, rss_start, rss_end, ratio,
      options.max_rss_growth, seconds, how.c_str());
  std::fflush(stdout);
  if (!clean) return fail("the daemon " + how + " when stopped");
  if (ratio > options.max_rss_growth) {
    return fail("the daemon's RSS grew from " + std::to_string(rss_start) + " kB to " + std::to_string(rss_end) +
                " kB, more than " + std::to_string(options.max_rss_growth) + "x");
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const Options options = parse(argc, argv);
  ::signal(SIGPIPE, SIG_IGN);
  google::protobuf::SetLogHandler(nullptr);  // it logs every string that is not UTF-8
  int status = 0;
  for (const std::string mode : {"serve", "run"}) {
    if (options.mode != "all" && options.mode != mode) continue;
    try {
      status |= storm(options, mode);
    } catch (const std::exception& error) {
      std::cerr << "grpc_storm: " << error.what() << std::endl;
      status = 1;
    }
  }
  return status;
}
