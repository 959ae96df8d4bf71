// The rank environment (docs/ARCHITECTURE.md, "The rank environment"): the torchrun-
// compatible variables every rank gets, plus fabricd's own. Built in two halves so that a
// coordinator can compute what all ranks of a node share (and every node agrees on it)
// while the node's agent adds what differs per process.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

namespace fabric::launcher {

using Environment = std::map<std::string, std::string>;

// Where one node's ranks sit in one generation of a job.
struct NodePlacement {
  std::string job_id;
  std::int32_t generation = 0;
  std::int32_t max_restarts = 0;
  std::int32_t node_rank = 0;
  std::int32_t num_nodes = 1;
  std::int32_t nproc_per_node = 1;
  std::string master_addr = "127.0.0.1";
  std::int32_t master_port = 0;
  // The RendezvousService that holds the job's store (node rank 0's launcher).
  std::string store_endpoint;
};

// The variables shared by the node's ranks, over `user` (JobSpec.env): the launcher's wins,
// so a stale RANK copied from a shell cannot mis-number the ranks.
Environment node_environment(const NodePlacement& placement, const Environment& user = {});

// Adds one process's variables: RANK, LOCAL_RANK, ROLE_RANK, FABRICD_ENDPOINT (the
// RendezvousService of the launcher that supervises it: heartbeats and error reports) and
// FABRICD_NODE_ADDRESS (the address this node is reached at: libfabric binds Gloo to it
// unless GLOO_SOCKET_IFNAME says otherwise, so that a host name resolving to 127.0.0.1
// does not cut the ranks off from other nodes).
void add_process_variables(Environment& env, std::int32_t rank, std::int32_t local_rank,
                           const std::string& supervisor_endpoint, const std::string& node_address);

// Adds the job's credentials: FABRICD_JOB_SECRET, which every RendezvousService call of
// the rank must carry, and FABRICD_TLS_CA (the CA file that verifies the launcher's TLS)
// when `tls_ca` is not empty. They are added by the launcher that spawns the ranks, never
// put in JobSpec.env or StartRanks.env, so nothing that shows a job's environment shows
// them. The launcher's own FABRICD_TLS_CERT/_KEY, FABRICD_TOKEN_FILE and FABRICD_INSECURE
// are removed.
void add_job_credentials(Environment& env, const std::string& secret, const std::string& tls_ca);

// This process's own environment (what a rank inherits underneath everything else).
Environment inherited_environment();

// Intra-op threads per rank. LibTorch starts one per core in every process, so N ranks on a
// node would run N threads per core. Unless OMP_NUM_THREADS is already in `env` (the job's
// env or the launcher's own environment: the user's choice is kept), each of the node's
// `local_ranks` ranks gets max(1, cpus / local_ranks), Lightning's rule
// (_set_num_threads_if_needed); torchrun's fixed 1 would leave cores idle for one rank.
void add_thread_limit(Environment& env, std::int32_t local_ranks, int cpus);

// The CPUs this process may run on: its affinity mask (taskset, cpusets), lowered to its
// cgroup's CPU quota when one is set (cgroup v2 cpu.max, e.g. a Kubernetes CPU limit),
// rounded up. At least 1.
int available_cpus();

// cgroup v2's cpu.max ("QUOTA PERIOD", or "max PERIOD" when unlimited) as CPUs, rounded up;
// nullopt when unlimited or unreadable.
std::optional<int> cpus_of_quota(const std::string& cpu_max);

}  // namespace fabric::launcher
