// HealthWatch: the launcher's judgement of a generation's ranks, from what their
// RendezvousService saw, at a time the caller passes in (the clock is injected, so the
// policy is unit-tested without sleeping).
//
//   * hung: a rank that heartbeated and then made no progress for heartbeat_timeout (the
//     silence is measured from the progress the rank last reported, not from the last
//     heartbeat, so a busy-but-stuck rank is timed from the moment it stopped).
//   * rendezvous timeout: some ranks made their first request and the rest did not follow
//     within rdzv_timeout of the first.
//
// Pure: it holds no state between calls and starts nothing; the caller kills and reports.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "rendezvous/rendezvous_service.h"

namespace fabric::launcher {

struct HealthVerdict {
  enum class Kind { kHung, kRendezvousTimeout };
  Kind kind = Kind::kHung;
  std::int32_t rank = 0;  // the hung rank, or the first that never joined
  std::string detail;     // "hung: no progress for 2.1 s (timeout 2.0 s), last seen in train at step 5"
};

class HealthWatch {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;

  // heartbeat_timeout zero: no hang detection.
  HealthWatch(std::chrono::milliseconds heartbeat_timeout, std::chrono::milliseconds rdzv_timeout)
      : heartbeat_timeout_(heartbeat_timeout), rdzv_timeout_(rdzv_timeout) {}

  // The first of `ranks` (those still running) whose last heartbeat shows no progress for
  // heartbeat_timeout at `now`.
  std::optional<HealthVerdict> find_hung(TimePoint now, const std::vector<std::int32_t>& ranks,
                                         const std::map<std::int32_t, RankHeartbeat>& heartbeats) const;

  // A rendezvous of world_size ranks that some joined (first requests in `joined`) and that
  // is still incomplete rdzv_timeout after the first joined. rdzv_timeout zero: never.
  std::optional<HealthVerdict> find_rendezvous_timeout(TimePoint now, std::int32_t world_size,
                                                       const std::map<std::int32_t, TimePoint>& joined) const;

  // How often a rank should heartbeat so that a rank frozen whole is seen at most a quarter
  // of the timeout late, and at least every 2 s, since heartbeats also carry the progress
  // (steps, rates, logged loss) that the status page and `fabricd top` show.
  std::chrono::milliseconds heartbeat_interval() const;

 private:
  const std::chrono::milliseconds heartbeat_timeout_;
  const std::chrono::milliseconds rdzv_timeout_;
};

// "2.1 s"
std::string format_seconds(std::chrono::milliseconds duration);

}  // namespace fabric::launcher
