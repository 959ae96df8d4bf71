// A ClusterEnvironment whose values were read once from environment variables; the
// launcher-specific parts live in environments.cc.
#pragma once

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

class FixedEnvironment final : public ClusterEnvironment {
 public:
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

// The first host of a Slurm node list: "a,b" / "a b" => "a", "node[5-9,12]" => "node5".
std::string first_slurm_host(const std::string& nodelist);

}  // namespace fabric::environments
