// bench/cluster: fabricd across nodes (bench/README.md, "cluster").
//   submit-to-first-barrier-2x2      `fabricd submit` of 2 nodes x 2 ranks to a standing
//                                    cluster (coordinator + 2 agents, each node a network
//                                    namespace as in tests/e2e/cluster_test.cc) -> every rank
//                                    past its first barrier; against `fabricd run
//                                    --nproc-per-node 4` on one of those nodes. Alternating.
//   agent-loss-to-restarted-barrier  an elastic 2-node job (1:2, --max-restarts 1), one agent
//                                    SIGKILLed -> the survivor's restarted ranks past their
//                                    first barrier; against the configured heartbeat timeout.
//   coordinator-N-agents             the coordinator's CPU and RSS while N simulated agents
//                                    (bench_agent_swarm) register, hold their streams and
//                                    heartbeat on 127.0.0.1; against the same coordinator
//                                    idle with 0 agents just before. Heartbeat latency too.
// The namespaced cases need root; without it each prints {"case": ..., "skipped": why}.
// Flags: --rounds N (cases 1-2, default 5), --load-rounds N (case 3, default 3),
// --window-seconds S (case 3, default 30), --agents N (default 1000), --heartbeat-timeout S
// (case 2, default 2), --cases LIST (comma-separated 1,2,3; default all).
#include <signal.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common.h"
#include "support/cluster_credentials.h"
#include "support/network_lab.h"
#include "support/processes.h"
#include "support/temp_dir.h"

namespace {

using fabric::testing::Daemon;
using fabric::testing::NetworkLab;
using fabric::testing::run_command;
using fabric::testing::ScopedTempDir;
using std::chrono::milliseconds;
using std::chrono::seconds;

const std::string kFabricd = FABRICD;
const std::string kRank = LAUNCH_RANK;
const std::string kSwarm = AGENT_SWARM;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

long long now_ms() {
  return std::chrono::duration_cast<milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

void sleep_ms(long long ms) { std::this_thread::sleep_for(milliseconds(ms)); }

struct Flags {
  int rounds = 5, load_rounds = 3, agents = 1000;
  double window_seconds = 30, heartbeat_timeout = 2;
  std::set<int> cases = {1, 2, 3};
};

double median(std::vector<double> values) {
  if (values.empty()) return kNaN;
  std::sort(values.begin(), values.end());
  const std::size_t n = values.size();
  return n % 2 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

std::string number(double value, int decimals) {
  if (!std::isfinite(value)) return "null";
  char text[64];
  std::snprintf(text, sizeof(text), "%.*f", decimals, value);
  return text;
}

// A ratio: 3 decimals, or 3 significant digits when it is that small.
std::string ratio_text(double value) {
  if (!std::isfinite(value) || std::fabs(value) >= 0.1 || value == 0) return number(value, 3);
  char text[64];
  std::snprintf(text, sizeof(text), "%.3g", value);
  return text;
}

// One JSON line: ours/theirs are medians over the rounds, ratio the median of the per-round
// ratios, with their min and max.
void report(const std::string& name, const std::string& metric, const std::vector<double>& ours,
            const std::string& baseline, const std::vector<double>& theirs, const std::string& better, int decimals) {
  std::vector<double> ratios;
  for (std::size_t i = 0; i < ours.size() && i < theirs.size(); ++i) {
    if (theirs[i] > 0) ratios.push_back(ours[i] / theirs[i]);
  }
  const auto [low, high] = ratios.empty() ? std::pair{kNaN, kNaN}
                                          : std::pair{*std::min_element(ratios.begin(), ratios.end()),
                                                      *std::max_element(ratios.begin(), ratios.end())};
  std::printf(
      "{\"bench\": \"cluster\", \"case\": \"%s\", \"metric\": \"%s\", \"ours\": %s, \"baseline\": \"%s\", "
      "\"theirs\": %s, \"ratio\": %s, \"better\": \"%s\", \"ratio_min\": %s, \"ratio_max\": %s, \"rounds\": %zu}\n",
      name.c_str(), metric.c_str(), number(median(ours), decimals).c_str(), baseline.c_str(),
      number(median(theirs), decimals).c_str(), ratio_text(median(ratios)).c_str(), better.c_str(),
      ratio_text(low).c_str(), ratio_text(high).c_str(), ours.size());
  std::fflush(stdout);
}

void skip(const std::string& name, const std::string& why) {
  std::string escaped;
  for (const char c : why) {
    if (c == '"' || c == '\\') escaped += '\\';
    if (static_cast<unsigned char>(c) >= 0x20) escaped += c;
  }
  std::printf("{\"bench\": \"cluster\", \"case\": \"%s\", \"skipped\": \"%s\"}\n", name.c_str(), escaped.c_str());
  std::fflush(stdout);
}

void note(const std::string& text) { std::cerr << "cluster: " << text << std::endl; }

// --- The rank program's event file (launch_rank.cc) -----------------------------------

// "barrier <generation> <ms>" lines of one generation.
std::vector<long long> barriers(const std::string& path, int generation) {
  std::vector<long long> at;
  std::ifstream file(path);
  for (std::string kind; file >> kind;) {
    if (kind == "barrier") {
      int g = -1;
      long long ms = 0;
      file >> g >> ms;
      if (g == generation) at.push_back(ms);
    } else {
      std::string rest;
      std::getline(file, rest);
    }
  }
  return at;
}

// Waits (bounded) until `count` ranks of `generation` have passed their barrier.
std::optional<std::vector<long long>> wait_barriers(const std::string& path, int generation, int count,
                                                    milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    std::vector<long long> at = barriers(path, generation);
    if (static_cast<int>(at.size()) >= count) return at;
    if (std::chrono::steady_clock::now() > deadline) return std::nullopt;
    sleep_ms(10);  // a file the ranks append to: nothing to block on
  }
}

std::size_t occurrences(const std::string& text, const std::string& needle) {
  std::size_t count = 0;
  for (auto at = text.find(needle); at != std::string::npos; at = text.find(needle, at + needle.size())) ++count;
  return count;
}

std::string trimmed(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ' || text.back() == '\r')) text.pop_back();
  return text;
}

// --- Cases 1 and 2: a coordinator in "c", agents with 2 slots in "n1" and "n2" ----------

class Cluster {
 public:
  explicit Cluster(double heartbeat_timeout)
      : lab_({"c", "n1", "n2"}),
        server_(lab_.address("c") + ":7070"),
        // As a production cluster runs: TLS between the daemons, a token for the client.
        credentials_(kFabricd, dir_.path(),
                     {{"c", lab_.address("c")}, {"n1", lab_.address("n1")}, {"n2", lab_.address("n2")}}, {"bench"}) {
    coordinator_ = std::make_unique<Daemon>(
        lab_.exec("c") + kFabricd + " serve --listen " + server_ + " --state " + dir_.path() +
            "/state --local-agent 0 --agent-heartbeat-interval " + std::to_string(heartbeat_timeout / 8) +
            " --agent-heartbeat-timeout " + std::to_string(heartbeat_timeout) + credentials_.node_flags("c") +
            " --token-file " + credentials_.tokens(),
        dir_.path() + "/coordinator.log");
    if (!coordinator_->wait_for_output("listening on", seconds(20))) {
      throw std::runtime_error("the coordinator did not start: " + coordinator_->output());
    }
    for (const char* node : {"n1", "n2"}) start_agent(node);
  }

  void start_agent(const std::string& node) {
    auto& agent = agents_[node];
    agent.reset();
    agent = std::make_unique<Daemon>(lab_.exec(node) + kFabricd + " agent --coordinator " + server_ + " --node-name " +
                                         node + " --advertise " + lab_.address(node) + " --slots 2" +
                                         credentials_.node_flags(node),
                                     dir_.path() + "/agent-" + node + "." + std::to_string(agent_starts_++) + ".log");
    if (!agent->wait_for_output("registered as", seconds(20))) {
      throw std::runtime_error("agent " + node + " did not register: " + agent->output());
    }
  }

  // The job's id, or "" (with the reason on stderr).
  std::string submit(const std::string& flags_and_program) {
    const auto submitted =
        run_command("timeout 60 " + lab_.exec("c") + kFabricd + " submit --server " + server_ +
                    credentials_.client_flags("bench") + " " + flags_and_program);
    if (submitted.status != 0) {
      note("fabricd submit failed (" + std::to_string(submitted.status) + "): " + submitted.output);
      return "";
    }
    return trimmed(submitted.output);
  }
  std::string watch_command(const std::string& job) const {
    return lab_.exec("c") + kFabricd + " watch " + job + " --server " + server_ + credentials_.client_flags("bench");
  }
  std::string status(const std::string& job) const {
    return run_command("timeout 30 " + lab_.exec("c") + kFabricd + " status " + job + " --server " + server_ +
                       credentials_.client_flags("bench"))
        .output;
  }

  const NetworkLab& lab() const { return lab_; }
  Daemon& coordinator() { return *coordinator_; }
  Daemon& agent(const std::string& node) { return *agents_.at(node); }
  const std::string& dir() const { return dir_.path(); }

 private:
  ScopedTempDir dir_;
  NetworkLab lab_;
  std::string server_;
  fabric::testing::ClusterCredentials credentials_;
  std::unique_ptr<Daemon> coordinator_;
  std::map<std::string, std::unique_ptr<Daemon>> agents_;
  int agent_starts_ = 0;
};

// Case 1, one side: ms from starting the launcher to the last of 4 ranks past its barrier.
// `detail` gets when `fabricd submit` returned and the first rank passed, for the log.
std::optional<double> submit_2x2(Cluster& cluster, const std::string& out, std::string& detail) {
  ::unlink(out.c_str());
  const long long start = now_ms();
  const std::string job = cluster.submit("--nnodes 2 --nproc-per-node 2 --grace-period 1 " + kRank + " " + out);
  const long long submitted = now_ms();
  if (job.empty()) return std::nullopt;
  const auto watched = run_command("timeout 120 " + cluster.watch_command(job));
  const auto at = barriers(out, 0);
  if (watched.status != 0 || at.size() != 4) {
    note("the 2x2 job " + job + " ended with watch status " + std::to_string(watched.status) + " and " +
         std::to_string(at.size()) + " of 4 barriers:\n" + watched.output + cluster.status(job));
    return std::nullopt;
  }
  detail = "submit returned at +" + std::to_string(submitted - start) + " ms, first rank past at +" +
           std::to_string(*std::min_element(at.begin(), at.end()) - start) + " ms";
  return static_cast<double>(*std::max_element(at.begin(), at.end()) - start);
}

std::optional<double> run_1x4(Cluster& cluster, const std::string& out) {
  ::unlink(out.c_str());
  const long long start = now_ms();
  const auto ran = run_command("timeout 120 " + cluster.lab().exec("n1") + kFabricd +
                               " run --nproc-per-node 4 --grace-period 1 " + kRank + " " + out);
  const auto at = barriers(out, 0);
  if (ran.status != 0 || at.size() != 4) {
    note("fabricd run ended with " + std::to_string(ran.status) + " and " + std::to_string(at.size()) +
         " of 4 barriers:\n" + ran.output);
    return std::nullopt;
  }
  return static_cast<double>(*std::max_element(at.begin(), at.end()) - start);
}

bool submit_to_first_barrier(Cluster& cluster, const Flags& flags) {
  const std::string out = cluster.dir() + "/events";
  std::vector<double> ours, theirs;
  for (int round = 0; round < flags.rounds; ++round) {
    std::optional<double> cluster_ms, run_ms;
    std::string detail;
    // Alternate who goes first, so drift in the machine's speed favours neither.
    if (round % 2 == 0) {
      cluster_ms = submit_2x2(cluster, out, detail);
      run_ms = run_1x4(cluster, out);
    } else {
      run_ms = run_1x4(cluster, out);
      cluster_ms = submit_2x2(cluster, out, detail);
    }
    if (!cluster_ms || !run_ms) return false;
    note("submit-to-first-barrier-2x2 round " + std::to_string(round) + ": submit " + number(*cluster_ms, 0) +
         " ms (" + detail + "), run " + number(*run_ms, 0) + " ms");
    ours.push_back(*cluster_ms);
    theirs.push_back(*run_ms);
  }
  report("submit-to-first-barrier-2x2", "ms", ours, "fabricd-run-1-node", theirs, "lower", 0);
  return true;
}

// Case 2, one round: ms from the SIGKILL of n2's agent to both restarted ranks on n1 past
// their first barrier.
std::optional<double> agent_loss(Cluster& cluster, const std::string& out) {
  ::unlink(out.c_str());
  const std::string job =
      cluster.submit("--nnodes 1:2 --nproc-per-node 2 --max-restarts 1 --grace-period 1 " + kRank + " " + out + " hold");
  if (job.empty()) return std::nullopt;
  Daemon watcher(cluster.watch_command(job), cluster.dir() + "/watch-" + job + ".log");
  if (!wait_barriers(out, 0, 4, seconds(90))) {
    note("generation 0 of " + job + " did not reach its barrier on 2 nodes:\n" + cluster.status(job));
    return std::nullopt;
  }
  const std::size_t lost_before = occurrences(cluster.coordinator().output(), "node n2 lost");
  const long long killed = now_ms();
  cluster.agent("n2").kill(SIGKILL);
  cluster.agent("n2").wait(seconds(10));
  long long lost = -1;
  std::vector<long long> restarted;
  const auto deadline = std::chrono::steady_clock::now() + seconds(60);
  while (std::chrono::steady_clock::now() < deadline) {
    if (lost < 0 && occurrences(cluster.coordinator().output(), "node n2 lost") > lost_before) lost = now_ms();
    restarted = barriers(out, 1);
    if (restarted.size() >= 2) break;
    sleep_ms(10);
  }
  const auto ended = watcher.wait(seconds(60));
  const bool ok = restarted.size() == 2 && ended && *ended == 0;
  if (!ok) {
    note("the elastic job " + job + " did not restart on the survivor (" + std::to_string(restarted.size()) +
         " barriers of generation 1, watch " + (ended ? std::to_string(*ended) : "still running") + "):\n" +
         watcher.output() + cluster.status(job));
  }
  cluster.start_agent("n2");  // for the next round
  if (!ok) return std::nullopt;
  const double ms = static_cast<double>(*std::max_element(restarted.begin(), restarted.end()) - killed);
  note("agent-loss round: declared lost after " + (lost < 0 ? std::string("?") : std::to_string(lost - killed)) +
       " ms (polling the coordinator's log), restarted ranks past the barrier after " + number(ms, 0) + " ms");
  return ms;
}

bool agent_loss_to_restarted_barrier(Cluster& cluster, const Flags& flags) {
  const std::string out = cluster.dir() + "/elastic-events";
  const double timeout_ms = flags.heartbeat_timeout * 1000;
  std::vector<double> ours, theirs;
  for (int round = 0; round < flags.rounds; ++round) {
    const auto ms = agent_loss(cluster, out);
    if (!ms) return false;
    ours.push_back(*ms);
    theirs.push_back(timeout_ms);
  }
  report("agent-loss-to-restarted-barrier", "ms", ours, "heartbeat-timeout", theirs, "lower", 0);
  return true;
}

// --- Case 3: a coordinator under N simulated agents --------------------------------------

long long cpu_ticks(pid_t pid) {
  std::ifstream file("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  const auto paren = text.rfind(')');  // the command name may hold spaces
  if (paren == std::string::npos) return -1;
  std::istringstream fields(text.substr(paren + 2));
  std::vector<std::string> values;
  for (std::string value; fields >> value;) values.push_back(value);
  // After the name: state is field 3, utime 14 and stime 15 (proc(5)), so 11 and 12 here.
  if (values.size() < 13) return -1;
  return std::stoll(values[11]) + std::stoll(values[12]);
}

// A "Key:   value kB" line of /proc/PID/status, as a number.
double status_field(pid_t pid, const std::string& key) {
  std::ifstream file("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(file, line);) {
    if (line.rfind(key + ":", 0) == 0) return std::stod(line.substr(key.size() + 1));
  }
  return kNaN;
}

struct Usage {
  double cpu_percent, rss_mb, stat_cpu_percent, rss_start_mb;
};

// The process's CPU time in seconds, all its threads (live and ended) together: the counter
// the kernel reports in /proc/PID/stat as utime + stime, read through the process's CPU
// clock, which has nanoseconds where stat has clock ticks (10 ms).
double cpu_seconds(pid_t pid) {
  clockid_t clock{};
  timespec time{};
  if (::clock_getcpuclockid(pid, &clock) != 0 || ::clock_gettime(clock, &time) != 0) return kNaN;
  return static_cast<double>(time.tv_sec) + static_cast<double>(time.tv_nsec) / 1e9;
}

// The process's CPU (% of one core) over `window`, and its VmRSS at the end.
Usage measure_usage(pid_t pid, milliseconds window) {
  const double rss_start_mb = status_field(pid, "VmRSS") / 1024.0;
  const long long ticks0 = cpu_ticks(pid);
  const double cpu0 = cpu_seconds(pid);
  const auto t0 = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(window);
  const long long ticks1 = cpu_ticks(pid);
  const double cpu1 = cpu_seconds(pid);
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double ticks_per_second = static_cast<double>(::sysconf(_SC_CLK_TCK));
  return {.cpu_percent = 100.0 * (cpu1 - cpu0) / elapsed,
          .rss_mb = status_field(pid, "VmRSS") / 1024.0,
          .stat_cpu_percent = 100.0 * static_cast<double>(ticks1 - ticks0) / ticks_per_second / elapsed,
          .rss_start_mb = rss_start_mb};
}

double json_number(const std::string& text, const std::string& key) {
  std::smatch match;
  if (!std::regex_search(text, match, std::regex("\"" + key + "\": (-?[0-9.]+)"))) return kNaN;
  return std::stod(match[1]);
}

struct LoadRound {
  Usage idle, loaded;
  double p50 = kNaN, p99 = kNaN;
};

std::optional<LoadRound> load_round(const Flags& flags, int round) {
  ScopedTempDir dir;
  // Plain text on loopback: the swarm's simulated agents hold no certificates.
  Daemon coordinator(kFabricd + " serve --insecure --listen 127.0.0.1:0 --local-agent 0 --state " + dir.path() + "/state",
                     dir.path() + "/coordinator.log");
  if (!coordinator.wait_for_output("listening on", seconds(20))) {
    note("the coordinator did not start: " + coordinator.output());
    return std::nullopt;
  }
  std::smatch match;
  const std::string started = coordinator.output();
  if (!std::regex_search(started, match, std::regex("listening on (127\\.0\\.0\\.1:[0-9]+)"))) return std::nullopt;
  const std::string address = match[1];
  const pid_t pid = coordinator.pid();  // sh exec'ed fabricd: the same process
  const milliseconds window(static_cast<long long>(flags.window_seconds * 1000));
  constexpr long long kWarmupMs = 2000;

  LoadRound result;
  sleep_ms(kWarmupMs);
  result.idle = measure_usage(pid, window);
  const double idle_threads = status_field(pid, "Threads");

  Daemon swarm(kSwarm + " --coordinator " + address + " --agents " + std::to_string(flags.agents) +
                   " --warmup-seconds " + std::to_string(kWarmupMs / 1000.0) + " --window-seconds " +
                   std::to_string(flags.window_seconds) + " --tail-seconds 1",
               dir.path() + "/swarm.log");
  const auto ready = swarm.wait_for_output("ready ", seconds(180));
  if (!ready) {
    note("the agent swarm did not get ready:\n" + swarm.output() + "\ncoordinator:\n" + coordinator.output().substr(0, 4000));
    return std::nullopt;
  }
  const double ramp_cpu = cpu_seconds(pid);
  sleep_ms(kWarmupMs);
  const double swarm_cpu0 = cpu_seconds(swarm.pid());
  result.loaded = measure_usage(pid, window);
  const double swarm_cpu1 = cpu_seconds(swarm.pid());
  const double loaded_threads = status_field(pid, "Threads"), peak_mb = status_field(pid, "VmHWM") / 1024.0;
  const std::size_t lost_in_window = occurrences(coordinator.output(), " lost: ");
  const auto swarm_status = swarm.wait(window + seconds(90));
  const std::string summary = swarm.output();
  // The swarm is gone: its sessions should expire within the heartbeat timeout (5 s), and
  // the threads of their streams end.
  const auto expired_by = std::chrono::steady_clock::now() + seconds(15);
  std::size_t expired = 0;
  while (std::chrono::steady_clock::now() < expired_by) {
    expired = occurrences(coordinator.output(), " lost: ") - lost_in_window;
    if (expired >= static_cast<std::size_t>(flags.agents)) break;
    sleep_ms(200);
  }
  sleep_ms(1000);
  const double after_threads = status_field(pid, "Threads"), after_mb = status_field(pid, "VmRSS") / 1024.0;
  const bool alive = !coordinator.wait(milliseconds(0));  // still running after the load
  coordinator.kill(SIGTERM);
  const auto coordinator_status = coordinator.wait(seconds(30));

  result.p50 = json_number(summary, "p50_ms");
  result.p99 = json_number(summary, "p99_ms");
  const double swarm_cpu = 100.0 * (swarm_cpu1 - swarm_cpu0) / (static_cast<double>(window.count()) / 1000);
  std::ostringstream text;
  text << "coordinator-" << flags.agents << "-agents round " << round << ": idle " << number(result.idle.cpu_percent, 2)
       << "% cpu (/proc/PID/stat: " << number(result.idle.stat_cpu_percent, 2) << "%), "
       << number(result.idle.rss_mb, 1) << " MB, " << idle_threads << " threads; loaded "
       << number(result.loaded.cpu_percent, 2) << "% cpu (/proc/PID/stat: "
       << number(result.loaded.stat_cpu_percent, 2) << "%), " << number(result.loaded.rss_start_mb, 1) << " -> "
       << number(result.loaded.rss_mb, 1) << " MB over the window (peak " << number(peak_mb, 1) << "), "
       << loaded_threads << " threads; after the swarm left: " << expired << " sessions expired, " << after_threads
       << " threads, " << number(after_mb, 1) << " MB; coordinator cpu-seconds until ready "
       << number(ramp_cpu, 2) << "; generator " << number(swarm_cpu, 1) << "% cpu; sessions lost in the window "
       << lost_in_window << "; coordinator " << (alive ? "alive" : "GONE") << ", exit on SIGTERM "
       << (coordinator_status ? std::to_string(*coordinator_status) : "none within 30 s") << "\n  swarm: "
       << trimmed(summary);
  note(text.str());
  if (!swarm_status || *swarm_status != 0 || !alive || lost_in_window > 0 || !std::isfinite(result.p99)) {
    note("coordinator-" + std::to_string(flags.agents) + "-agents round " + std::to_string(round) +
         " failed; coordinator log tail:\n" +
         coordinator.output().substr(coordinator.output().size() > 4000 ? coordinator.output().size() - 4000 : 0));
    return std::nullopt;
  }
  return result;
}

bool coordinator_under_agents(const Flags& flags) {
  // Each simulated agent is a TCP connection at both ends; the coordinator inherits this.
  rlimit files{};
  ::getrlimit(RLIMIT_NOFILE, &files);
  files.rlim_cur = files.rlim_max;
  ::setrlimit(RLIMIT_NOFILE, &files);
  if (files.rlim_cur < static_cast<rlim_t>(flags.agents) * 2 + 256) {
    note("RLIMIT_NOFILE is " + std::to_string(files.rlim_cur) + ": too few descriptors for " +
         std::to_string(flags.agents) + " agents");
  }
  std::vector<double> cpu, cpu_idle, rss, rss_idle, p50, p99, timeout;
  for (int round = 0; round < flags.load_rounds; ++round) {
    const auto result = load_round(flags, round);
    if (!result) return false;
    cpu.push_back(result->loaded.cpu_percent);
    cpu_idle.push_back(result->idle.cpu_percent);
    rss.push_back(result->loaded.rss_mb);
    rss_idle.push_back(result->idle.rss_mb);
    p50.push_back(result->p50);
    p99.push_back(result->p99);
    timeout.push_back(5000);  // fabricd serve's default --agent-heartbeat-timeout
  }
  const std::string name = "coordinator-" + std::to_string(flags.agents) + "-agents";
  report(name, "cpu_percent", cpu, "idle-coordinator-0-agents", cpu_idle, "lower", 2);
  report(name, "rss_mb", rss, "idle-coordinator-0-agents", rss_idle, "lower", 1);
  report(name, "heartbeat_p50_ms", p50, "agent-heartbeat-timeout", timeout, "lower", 2);
  report(name, "heartbeat_p99_ms", p99, "agent-heartbeat-timeout", timeout, "lower", 2);
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  Flags flags;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) {
      std::cerr << "cluster: " << flag << " needs a value" << std::endl;
      return 2;
    }
    const std::string value = argv[++i];
    if (flag == "--rounds") flags.rounds = std::stoi(value);
    else if (flag == "--load-rounds") flags.load_rounds = std::stoi(value);
    else if (flag == "--window-seconds") flags.window_seconds = std::stod(value);
    else if (flag == "--agents") flags.agents = std::stoi(value);
    else if (flag == "--heartbeat-timeout") flags.heartbeat_timeout = std::stod(value);
    else if (flag == "--cases") {
      const std::vector<int> cases = bench::parse_int_list(value);
      flags.cases = {cases.begin(), cases.end()};
    } else {
      std::cerr << "cluster: unknown flag " << flag << std::endl;
      return 2;
    }
  }
  if (flags.rounds < 1 || flags.load_rounds < 1 || flags.agents < 1 || flags.window_seconds <= 0 ||
      flags.heartbeat_timeout <= 0) {
    std::cerr << "cluster: --rounds, --load-rounds, --agents, --window-seconds and --heartbeat-timeout must be positive"
              << std::endl;
    return 2;
  }
  ::signal(SIGPIPE, SIG_IGN);
  bool ok = true;
  if (flags.cases.contains(1) || flags.cases.contains(2)) {
    if (const std::string why = NetworkLab::unavailable(); !why.empty()) {
      if (flags.cases.contains(1)) skip("submit-to-first-barrier-2x2", why);
      if (flags.cases.contains(2)) skip("agent-loss-to-restarted-barrier", why);
    } else {
      try {
        Cluster cluster(flags.heartbeat_timeout);
        if (flags.cases.contains(1) && !submit_to_first_barrier(cluster, flags)) {
          note("submit-to-first-barrier-2x2 did not complete");
          ok = false;
        }
        if (flags.cases.contains(2) && !agent_loss_to_restarted_barrier(cluster, flags)) {
          note("agent-loss-to-restarted-barrier did not complete");
          ok = false;
        }
      } catch (const std::exception& error) {
        note(error.what());
        ok = false;
      }
    }
  }
  if (flags.cases.contains(3) && !coordinator_under_agents(flags)) {
    note("coordinator-" + std::to_string(flags.agents) + "-agents did not complete");
    ok = false;
  }
  return ok ? 0 : 1;
}
