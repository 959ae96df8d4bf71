// bench/control_plane: what keeping the control plane on etcd costs against SQLite
// (bench/README.md, "control_plane").
//   transitions-etcd-N  JobStore::put_job of one job's transitions, one after the other
//                       (what a coordinator does under its lock), each compare-and-swap on
//                       the job's revision and fenced by a won election, as the leader
//                       writes; on a real etcd of N members (1 and 3) against the SQLite file
//                       (WAL, synchronous=FULL) in the same directory. transitions/s.
//   submit-to-running-etcd  SubmitJob -> the job seen RUNNING on WatchJob, through two
//                       standing `fabricd serve` on 127.0.0.1 with a local agent each: one on
//                       `--store etcd://` (a 1-member etcd), one on `--state DIR` (SQLite).
//                       The job (`/bin/sleep 0.1`) is waited to its end before the next. ms.
// Sides alternate round by round (bench/common.h). Flags: --rounds N (default 9),
// --transitions N per round and side (default 200), --submits N per round and side
// (default 10), --cases LIST (comma-separated 1,2; default both).
#include <grpcpp/grpcpp.h>
#include <signal.h>

#include <chrono>
#include <iostream>
#include <memory>
#include <set>
#include <string>

#include "common.h"
#include "etcd/etcd_client.h"
#include "etcd/etcd_job_store.h"
#include "etcd/leader_election.h"
#include "fabric/v1/job.grpc.pb.h"
#include "jobs/job_store.h"
#include "support/etcd_cluster.h"
#include "support/network_lab.h"
#include "support/processes.h"
#include "support/temp_dir.h"

namespace {

namespace v1 = fabric::v1;
using fabric::launcher::EtcdClient;
using fabric::launcher::JobStore;
using fabric::launcher::LeaderElection;
using fabric::launcher::StoredJob;
using fabric::testing::Daemon;
using fabric::testing::EtcdCluster;
using fabric::testing::ScopedTempDir;
using std::chrono::milliseconds;
using std::chrono::seconds;

const std::string kFabricd = FABRICD;

struct Flags {
  int rounds = 9;
  int transitions = 200;
  int submits = 10;
  std::set<int> cases{1, 2};
};

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// A job record the size a coordinator writes: a 2-node spec with its environment and the
// StartRanks of both nodes.
StoredJob sample_job(const std::string& job_id) {
  StoredJob stored;
  v1::Job& job = *stored.record.mutable_job();
  job.set_job_id(job_id);
  job.set_state(v1::JOB_STATE_PENDING);
  v1::JobSpec& spec = *job.mutable_spec();
  spec.set_program("/opt/train/bin/train");
  for (const char* arg : {"--epochs", "30", "--checkpoint-dir", "/data/checkpoints/run-17"}) spec.add_args(arg);
  (*spec.mutable_env())["OMP_NUM_THREADS"] = "4";
  (*spec.mutable_env())["DATA_DIR"] = "/data/sets/digits";
  spec.set_nproc_per_node(2);
  spec.set_num_nodes(2);
  spec.set_max_restarts(3);
  stored.record.set_job_secret(std::string(32, 's'));
  for (int node = 0; node < 2; ++node) {
    stored.record.add_agent_ids("agent-" + std::to_string(node));
    v1::StartRanks& start = *stored.record.add_assignments();
    start.set_job_id(job_id);
    *start.mutable_spec() = spec;
    start.add_ranks(node * 2);
    start.add_ranks(node * 2 + 1);
    start.set_node_rank(node);
    start.set_world_size(4);
  }
  return stored;
}

// One round of one side: a new job, then `count` transitions of it; transitions/s.
double time_transitions(JobStore& store, int count, int& jobs_made) {
  StoredJob job = sample_job("bench-" + std::to_string(jobs_made++));
  store.put_job(job);
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < count; ++i) {
    v1::Job& state = *job.record.mutable_job();
    state.set_state(i % 2 == 0 ? v1::JOB_STATE_RUNNING : v1::JOB_STATE_RESTARTING);
    state.set_restart_count(i / 2);
    store.put_job(job);
  }
  return count / seconds_since(start);
}

// The store a leading coordinator writes through: its own election won, every write fenced.
struct LeaderStore {
  std::shared_ptr<EtcdClient> etcd;
  std::unique_ptr<LeaderElection> election;
  std::unique_ptr<JobStore> store;

  explicit LeaderStore(const EtcdCluster& cluster) {
    const auto url = fabric::launcher::parse_etcd_url(cluster.url("/bench"));
    etcd = std::make_shared<EtcdClient>(url.endpoints);
    election = std::make_unique<LeaderElection>(etcd, fabric::launcher::LeaderElectionOptions{
                                                          .name = url.prefix + "/leader", .address = "bench"});
    store = fabric::launcher::open_etcd_job_store(etcd, url.prefix, election->campaign());
  }
};

void store_transitions(const Flags& flags, const std::string& dir) {
  const std::unique_ptr<JobStore> sqlite = fabric::launcher::open_sqlite_job_store(dir + "/fabricd.db");
  int jobs_made = 0;
  for (const int members : {1, 3}) {
    const EtcdCluster cluster(dir + "/etcd-" + std::to_string(members), members);
    LeaderStore etcd(cluster);
    time_transitions(*etcd.store, flags.transitions / 4, jobs_made);  // warm: connections, first fsyncs
    time_transitions(*sqlite, flags.transitions / 4, jobs_made);
    const bench::Comparison comparison = bench::alternate(
        flags.rounds, [&] { return time_transitions(*etcd.store, flags.transitions, jobs_made); },
        [&] { return time_transitions(*sqlite, flags.transitions, jobs_made); });
    std::cout << "{\"bench\": \"control_plane\", \"case\": \"transitions-etcd-" << members << "\", "
              << comparison.json("transitions_per_s", "sqlite-synchronous-full", "higher", "%.1f") << "}"
              << std::endl;
  }
}

// A standing `fabricd serve` with an agent of one slot in the same process.
class Coordinator {
 public:
  Coordinator(const std::string& store_flag, const std::string& log)
      : address_("127.0.0.1:" + std::to_string(fabric::testing::free_port())),
        process_(kFabricd + " serve --insecure --listen " + address_ + " " + store_flag + " --local-agent 1", log) {
    if (!process_.wait_for_output("registered as", seconds(60))) {
      throw std::runtime_error("fabricd serve " + store_flag + " did not start: " + process_.output());
    }
    stub_ = v1::JobService::NewStub(grpc::CreateChannel(address_, grpc::InsecureChannelCredentials()));
  }

  // Submits a short job and returns the ms from the call to the watch showing it RUNNING;
  // returns once the job has ended (successfully: anything else fails the bench).
  double submit_to_running() {
    v1::SubmitJobRequest request;
    request.mutable_spec()->set_program("/bin/sleep");
    request.mutable_spec()->add_args("0.1");
    v1::SubmitJobResponse response;
    const auto start = std::chrono::steady_clock::now();
    grpc::ClientContext submit;
    if (const grpc::Status status = stub_->SubmitJob(&submit, request, &response); !status.ok()) {
      throw std::runtime_error("SubmitJob: " + status.error_message());
    }
    grpc::ClientContext watch;
    v1::WatchJobRequest watch_request;
    watch_request.set_job_id(response.job().job_id());
    const auto events = stub_->WatchJob(&watch, watch_request);
    double running_ms = -1;
    v1::JobEvent event;
    while (events->Read(&event)) {
      if (running_ms < 0 && event.job().state() != v1::JOB_STATE_PENDING) running_ms = seconds_since(start) * 1000;
    }
    if (const grpc::Status status = events->Finish(); !status.ok() || event.job().state() != v1::JOB_STATE_SUCCEEDED) {
      throw std::runtime_error("job " + response.job().job_id() + " ended " + v1::JobState_Name(event.job().state()) +
                               " (" + status.error_message() + ")");
    }
    return running_ms;
  }

 private:
  std::string address_;
  Daemon process_;
  std::unique_ptr<v1::JobService::Stub> stub_;
};

void submit_to_running(const Flags& flags, const std::string& dir) {
  const EtcdCluster cluster(dir + "/etcd-serve", 1);
  Coordinator on_etcd("--store " + cluster.url("/serve"), dir + "/serve-etcd.log");
  Coordinator on_sqlite("--state " + dir + "/serve-sqlite", dir + "/serve-sqlite.log");
  on_etcd.submit_to_running();  // warm: the first spawn of each agent
  on_sqlite.submit_to_running();
  const auto median_of = [&](Coordinator& coordinator) {
    std::vector<double> times;
    for (int i = 0; i < flags.submits; ++i) times.push_back(coordinator.submit_to_running());
    return bench::median(times);
  };
  const bench::Comparison comparison =
      bench::alternate(flags.rounds, [&] { return median_of(on_etcd); }, [&] { return median_of(on_sqlite); });
  std::cout << "{\"bench\": \"control_plane\", \"case\": \"submit-to-running-etcd-1\", "
            << comparison.json("ms", "fabricd-serve-state-sqlite", "lower", "%.2f") << "}" << std::endl;
}

}  // namespace

int main(int argc, char** argv) {
  Flags flags;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--rounds") flags.rounds = std::stoi(value);
    else if (flag == "--transitions") flags.transitions = std::stoi(value);
    else if (flag == "--submits") flags.submits = std::stoi(value);
    else if (flag == "--cases") {
      const std::vector<int> cases = bench::parse_int_list(value);
      flags.cases = {cases.begin(), cases.end()};
    } else {
      std::cerr << "control_plane: unknown flag " << flag << std::endl;
      return 2;
    }
  }
  if (argc % 2 == 0 || flags.rounds < 1 || flags.transitions < 4 || flags.submits < 1) {
    std::cerr << "control_plane: flags take a value; --rounds and --submits >= 1, --transitions >= 4" << std::endl;
    return 2;
  }
  if (const std::string why = EtcdCluster::unavailable(); !why.empty()) {
    std::cout << "{\"bench\": \"control_plane\", \"skipped\": \"" << why << "\"}" << std::endl;
    return 0;
  }
  ::signal(SIGPIPE, SIG_IGN);
  const ScopedTempDir dir;
  try {
    if (flags.cases.contains(1)) store_transitions(flags, dir.path());
    if (flags.cases.contains(2)) submit_to_running(flags, dir.path());
  } catch (const std::exception& error) {
    std::cerr << "control_plane: " << error.what() << std::endl;
    return 1;
  }
  return 0;
}
