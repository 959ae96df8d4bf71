// What the per-launcher environments share (one file each: fabricd_environment.cc,
// torchrun_environment.cc, slurm_environment.cc, standalone_environment.cc): a
// ClusterEnvironment whose values were read once from environment variables, and the
// readers they have in common. detect_environment() (environments.cc) asks each in turn.
#pragma once

#include <memory>
#include <string>

#include "fabric/environment.h"

namespace fabric::environments {

struct Values {
  std::string name;
  bool external = false;
  int world_size = 1, global_rank = 0, local_rank = 0, node_rank = 0;
  std::string main_address = "127.0.0.1";
  int main_port = 0;
};

class FixedEnvironment : public ClusterEnvironment {
 public:
  // ConfigurationError for values that cannot be (a rank outside the world, ...).
  explicit FixedEnvironment(Values values);
  std::string name() const override { return values_.name; }
  bool creates_processes_externally() const override { return values_.external; }
  int world_size() const override { return values_.world_size; }
  int global_rank() const override { return values_.global_rank; }
  int local_rank() const override { return values_.local_rank; }
  int node_rank() const override { return values_.node_rank; }
  std::string main_address() const override { return values_.main_address; }
  int main_port() const override { return values_.main_port; }

 private:
  Values values_;
};

// Each: this process's environment when that launcher started it, else nullptr.
std::unique_ptr<ClusterEnvironment> detect_fabricd();
std::unique_ptr<ClusterEnvironment> detect_torchrun();
std::unique_ptr<ClusterEnvironment> detect_slurm();
std::unique_ptr<ClusterEnvironment> standalone();

// The integer variable `name`, or fallback; required_int throws ConfigurationError naming
// the launcher when it is unset.
int int_var(const char* name, int fallback);
int required_int(const char* name, const std::string& launcher);
// torchrun's RANK, WORLD_SIZE, LOCAL_RANK, GROUP_RANK, MASTER_ADDR/PORT, which fabricd sets too.
Values from_torchrun_variables(const std::string& name);

// The first host of a Slurm node list: "a,b" / "a b" => "a", "node[5-9,12]" => "node5".
std::string first_slurm_host(const std::string& nodelist);

}  // namespace fabric::environments
