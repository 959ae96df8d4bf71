// A RendezvousService served in-process on a loopback port, behind a plain-C++ header so
// that tests which include LibTorch (GrpcStore's) can start one too.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>

namespace fabric::testing {

// The job's secret: clients must carry it (RankIdentity::secret) or are refused.
inline constexpr const char* kTestJobSecret = "test-job-secret";

class TestRendezvousServer {
 public:
  // Serves job `job_id` of `world_size` ranks in generation 0.
  TestRendezvousServer(const std::string& job_id, int world_size);
  ~TestRendezvousServer();

  std::string endpoint() const;
  // Ends the current generation and starts `generation` (stale ranks are refused).
  void begin_generation(int generation);
  // How long ago, in ms, fabricd would say `rank` last made progress; -1 without heartbeats.
  long long ms_since_progress(int rank) const;
  // What `rank`'s last heartbeat said of its throughput and logged scalars.
  struct Reported {
    std::int64_t samples = 0;
    double steps_per_second = 0;
    double samples_per_second = 0;
    std::map<std::string, double> metrics;
  };
  std::optional<Reported> reported(int rank) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace fabric::testing
