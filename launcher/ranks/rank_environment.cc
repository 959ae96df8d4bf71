#include "ranks/rank_environment.h"

#include <sched.h>

#include <algorithm>
#include <fstream>
#include <sstream>

extern char** environ;

namespace fabric::launcher {

Environment node_environment(const NodePlacement& p, const Environment& user) {
  Environment env = user;
  const std::string world_size = std::to_string(p.num_nodes * p.nproc_per_node);
  const Environment ours = {
      {"WORLD_SIZE", world_size},
      {"LOCAL_WORLD_SIZE", std::to_string(p.nproc_per_node)},
      {"GROUP_RANK", std::to_string(p.node_rank)},
      {"NODE_RANK", std::to_string(p.node_rank)},
      {"GROUP_WORLD_SIZE", std::to_string(p.num_nodes)},
      {"ROLE_NAME", "default"},
      {"ROLE_WORLD_SIZE", world_size},
      {"MASTER_ADDR", p.master_addr},
      {"MASTER_PORT", std::to_string(p.master_port)},
      {"FABRICD_STORE_ENDPOINT", p.store_endpoint},
      {"FABRICD_JOB_ID", p.job_id},
      {"FABRICD_RESTART_COUNT", std::to_string(p.generation)},
      {"FABRICD_MAX_RESTARTS", std::to_string(p.max_restarts)},
      // torchrun's names for the same facts, read by programs that resume after a restart.
      {"TORCHELASTIC_RUN_ID", p.job_id},
      {"TORCHELASTIC_RESTART_COUNT", std::to_string(p.generation)},
      {"TORCHELASTIC_MAX_RESTARTS", std::to_string(p.max_restarts)},
  };
  for (const auto& [name, value] : ours) env[name] = value;
  return env;
}

void add_process_variables(Environment& env, std::int32_t rank, std::int32_t local_rank,
                           const std::string& supervisor_endpoint, const std::string& node_address) {
  env["RANK"] = std::to_string(rank);
  env["ROLE_RANK"] = std::to_string(rank);
  env["LOCAL_RANK"] = std::to_string(local_rank);
  env["FABRICD_ENDPOINT"] = supervisor_endpoint;
  env["FABRICD_NODE_ADDRESS"] = node_address;
}

void add_job_credentials(Environment& env, const std::string& secret, const std::string& tls_ca) {
  // The launcher's own credentials (set in its environment by a systemd unit, say) are not
  // the ranks' business.
  for (const char* name : {"FABRICD_TLS_CERT", "FABRICD_TLS_KEY", "FABRICD_TOKEN_FILE", "FABRICD_INSECURE"}) {
    env.erase(name);
  }
  env["FABRICD_JOB_SECRET"] = secret;
  if (tls_ca.empty()) {
    env.erase("FABRICD_TLS_CA");
  } else {
    env["FABRICD_TLS_CA"] = tls_ca;
  }
}

Environment inherited_environment() {
  Environment env;
  for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
    const std::string text = *entry;
    const auto equals = text.find('=');
    if (equals != std::string::npos && equals > 0) env.emplace(text.substr(0, equals), text.substr(equals + 1));
  }
  return env;
}

void add_thread_limit(Environment& env, std::int32_t local_ranks, int cpus) {
  if (env.contains("OMP_NUM_THREADS")) return;
  env["OMP_NUM_THREADS"] = std::to_string(std::max(1, cpus / std::max(1, local_ranks)));
}

std::optional<int> cpus_of_quota(const std::string& cpu_max) {
  std::istringstream fields(cpu_max);
  std::string quota;
  long long period = 0;
  if (!(fields >> quota >> period) || quota == "max" || period <= 0) return std::nullopt;
  long long microseconds = 0;
  try {
    microseconds = std::stoll(quota);
  } catch (const std::exception&) {
    return std::nullopt;
  }
  if (microseconds <= 0) return std::nullopt;
  return static_cast<int>(std::min<long long>((microseconds + period - 1) / period, 1 << 20));
}

namespace {

// The tightest cpu.max from this process's cgroup up to the root of its cgroup namespace.
std::optional<int> cgroup_cpu_limit() {
  std::ifstream self("/proc/self/cgroup");
  std::string path;
  for (std::string line; std::getline(self, line);) {
    if (line.rfind("0::", 0) == 0) path = line.substr(3);  // the cgroup v2 hierarchy
  }
  if (path.empty()) return std::nullopt;
  std::optional<int> limit;
  for (;;) {
    std::ifstream file(std::string("/sys/fs/cgroup").append(path == "/" ? "" : path).append("/cpu.max"));
    std::string cpu_max;
    if (file && std::getline(file, cpu_max)) {
      if (const auto cpus = cpus_of_quota(cpu_max)) limit = std::min(limit.value_or(*cpus), *cpus);
    }
    if (path == "/" || path.empty()) return limit;
    const auto slash = path.rfind('/');
    path = slash == 0 || slash == std::string::npos ? "/" : path.substr(0, slash);
  }
}

}  // namespace

int available_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  int cpus = ::sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : 1;
  if (const auto limit = cgroup_cpu_limit()) cpus = std::min(cpus, *limit);
  return std::max(1, cpus);
}

}  // namespace fabric::launcher
