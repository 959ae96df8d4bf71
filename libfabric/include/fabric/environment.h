// Who this process is in a job: its ranks, the world's size, and where rendezvous happens.
// One implementation per launcher (src/environments/): fabricd, torchrun, Slurm, and
// standalone (one process, or the ranks Fabric::launch starts). detect_environment() picks
// the first that applies, in that order.
#pragma once

#include <memory>
#include <string>

namespace fabric {

// A supervising launcher's store, barriers and progress reports (src/environments/
// launcher_services.h); only an environment whose launcher offers them has one.
class LauncherServices;

class ClusterEnvironment {
 public:
  virtual ~ClusterEnvironment() = default;

  virtual std::string name() const = 0;
  // Whether a launcher outside this program started all the ranks.
  virtual bool creates_processes_externally() const = 0;
  virtual int world_size() const = 0;
  virtual int global_rank() const = 0;
  virtual int local_rank() const = 0;
  virtual int node_rank() const = 0;
  // Where rank zero's store listens.
  virtual std::string main_address() const = 0;
  virtual int main_port() const = 0;
  // What the launcher that started this process offers beyond its variables (fabricd: the
  // store, barriers that name the missing ranks, hang detection), or nullptr. It lives as
  // long as the process.
  virtual LauncherServices* launcher() const { return nullptr; }
};

// The environment of this process; ConfigurationError for inconsistent variables (a rank
// outside the world, a missing MASTER_ADDR under torchrun, a malformed Slurm node list).
std::unique_ptr<ClusterEnvironment> detect_environment();

}  // namespace fabric
