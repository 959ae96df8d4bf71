// Who am I: fabricd, torchrun, Slurm or standalone, detected from the variables each
// launcher sets; inconsistent variables are a clear error (issue 4, "Environments").
#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <optional>
#include <string>

#include "environments/variables.h"
#include "fabric/environment.h"
#include "fabric/errors.h"

namespace fabric {
namespace {

// Sets variables for one test and restores the previous environment afterwards.
class ScopedEnv {
 public:
  explicit ScopedEnv(std::map<std::string, std::string> values) {
    for (const char* name : kAll) {
      const char* old = std::getenv(name);
      saved_[name] = old ? std::optional<std::string>(old) : std::nullopt;
      ::unsetenv(name);
    }
    for (const auto& [name, value] : values) ::setenv(name.c_str(), value.c_str(), 1);
  }
  ~ScopedEnv() {
    for (const auto& [name, value] : saved_) {
      if (value) ::setenv(name.c_str(), value->c_str(), 1);
      else ::unsetenv(name.c_str());
    }
  }

 private:
  static constexpr const char* kAll[] = {
      "FABRICD_ENDPOINT", "FABRICD_JOB_ID", "FABRICD_RESTART_COUNT", "FABRICD_JOB_SECRET", "TORCHELASTIC_RUN_ID",
      "RANK", "WORLD_SIZE", "LOCAL_RANK", "GROUP_RANK", "NODE_RANK",
      "MASTER_ADDR", "MASTER_PORT", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_NODEID",
      "SLURM_NODELIST", "SLURM_JOB_NODELIST", "SLURM_JOB_ID", "SLURM_JOB_NAME"};
  std::map<std::string, std::optional<std::string>> saved_;
};

TEST(Environment, NothingSet_IsOneStandaloneProcess) {
  ScopedEnv env({});
  auto detected = detect_environment();
  EXPECT_EQ(detected->name(), "standalone");
  EXPECT_FALSE(detected->creates_processes_externally());
  EXPECT_EQ(detected->world_size(), 1);
  EXPECT_EQ(detected->global_rank(), 0);
}

TEST(Environment, Torchrun_ReadsItsVariables) {
  ScopedEnv env({{"TORCHELASTIC_RUN_ID", "x"}, {"RANK", "3"}, {"WORLD_SIZE", "4"}, {"LOCAL_RANK", "1"},
                 {"GROUP_RANK", "1"}, {"MASTER_ADDR", "10.0.0.1"}, {"MASTER_PORT", "29500"}});
  auto detected = detect_environment();
  EXPECT_EQ(detected->name(), "torchrun");
  EXPECT_TRUE(detected->creates_processes_externally());
  EXPECT_EQ(detected->global_rank(), 3);
  EXPECT_EQ(detected->local_rank(), 1);
  EXPECT_EQ(detected->node_rank(), 1);
  EXPECT_EQ(detected->main_address(), "10.0.0.1");
  EXPECT_EQ(detected->main_port(), 29500);
}

TEST(Environment, FabricdWithoutItsJobId_IsRefusedNamingTheVariable) {
  ScopedEnv env({{"FABRICD_ENDPOINT", "127.0.0.1:5000"}, {"RANK", "0"}, {"WORLD_SIZE", "2"},
                 {"MASTER_ADDR", "127.0.0.1"}, {"MASTER_PORT", "29501"}});
  try {
    detect_environment();
    FAIL();
  } catch (const ConfigurationError& error) {
    EXPECT_NE(std::string(error.what()).find("FABRICD_JOB_ID is not"), std::string::npos) << error.what();
  }
}

TEST(Environment, Fabricd_IsDetectedFirst) {
  ScopedEnv env({{"FABRICD_ENDPOINT", "127.0.0.1:5000"}, {"FABRICD_JOB_ID", "job"}, {"FABRICD_RESTART_COUNT", "0"},
                 {"FABRICD_JOB_SECRET", "s"}, {"TORCHELASTIC_RUN_ID", "x"}, {"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "127.0.0.1"},
                 {"MASTER_PORT", "29501"}});
  EXPECT_EQ(detect_environment()->name(), "fabricd");
}

TEST(Environment, RankOutsideTheWorld_IsRefused) {
  ScopedEnv env({{"RANK", "4"}, {"WORLD_SIZE", "4"}, {"MASTER_ADDR", "127.0.0.1"}, {"MASTER_PORT", "29500"}});
  try {
    detect_environment();
    FAIL();
  } catch (const ConfigurationError& error) {
    EXPECT_NE(std::string(error.what()).find("rank 4 is outside the world of size 4"), std::string::npos)
        << error.what();
  }
}

TEST(Environment, TorchrunWithoutMasterAddress_IsRefused) {
  ScopedEnv env({{"TORCHELASTIC_RUN_ID", "x"}, {"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_PORT", "29500"}});
  try {
    detect_environment();
    FAIL();
  } catch (const ConfigurationError& error) {
    EXPECT_NE(std::string(error.what()).find("MASTER_ADDR is not set"), std::string::npos) << error.what();
  }
}

TEST(Environment, Slurm_DerivesAddressAndPortLikeLightning) {
  ScopedEnv env({{"SLURM_NTASKS", "8"}, {"SLURM_PROCID", "5"}, {"SLURM_LOCALID", "1"}, {"SLURM_NODEID", "2"},
                 {"SLURM_NODELIST", "gpu[17-20]"}, {"SLURM_JOB_ID", "1234567"}, {"SLURM_JOB_NAME", "train"}});
  auto detected = detect_environment();
  EXPECT_EQ(detected->name(), "slurm");
  EXPECT_EQ(detected->global_rank(), 5);
  EXPECT_EQ(detected->node_rank(), 2);
  EXPECT_EQ(detected->main_address(), "gpu17");
  EXPECT_EQ(detected->main_port(), 4567 + 15000);
}

TEST(Environment, InteractiveSlurm_IsNotALaunch) {
  ScopedEnv env({{"SLURM_NTASKS", "1"}, {"SLURM_PROCID", "0"}, {"SLURM_JOB_NAME", "bash"}});
  EXPECT_EQ(detect_environment()->name(), "standalone");
}

TEST(Environment, SlurmNodeLists_GiveTheFirstHost) {
  using environments::first_slurm_host;
  EXPECT_EQ(first_slurm_host("a,b"), "a");
  EXPECT_EQ(first_slurm_host("a b"), "a");
  EXPECT_EQ(first_slurm_host("host[5-9]"), "host5");
  EXPECT_EQ(first_slurm_host("host[5]"), "host5");
  EXPECT_EQ(first_slurm_host("host[12,15-20],other"), "host12");
  EXPECT_EQ(first_slurm_host("single"), "single");
}

}  // namespace
}  // namespace fabric
