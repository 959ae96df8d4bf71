#include "ranks/health_watch.h"

#include <algorithm>
#include <iomanip>
#include <sstream>

namespace fabric::launcher {

using std::chrono::milliseconds;

std::string format_seconds(milliseconds duration) {
  std::ostringstream text;
  text << std::fixed << std::setprecision(1) << static_cast<double>(duration.count()) / 1000.0 << " s";
  return text.str();
}

namespace {

// What the heartbeats say about where a rank stopped: "in train at step 31".
std::string where(const RankHeartbeat& beat) {
  std::string text = "in " + (beat.phase.empty() ? std::string("an unnamed phase") : beat.phase);
  if (beat.step) text += " at step " + std::to_string(*beat.step);
  return text;
}

}  // namespace

std::optional<HealthVerdict> HealthWatch::find_hung(TimePoint now, const std::vector<std::int32_t>& ranks,
                                                    const std::map<std::int32_t, RankHeartbeat>& heartbeats) const {
  if (heartbeat_timeout_.count() == 0) return std::nullopt;
  for (const std::int32_t rank : ranks) {
    const auto beat = heartbeats.find(rank);
    if (beat == heartbeats.end()) continue;  // never heartbeated: supervised by its exit alone
    const auto silent = std::chrono::duration_cast<milliseconds>(now - beat->second.last_progress);
    if (silent < heartbeat_timeout_) continue;
    return HealthVerdict{.kind = HealthVerdict::Kind::kHung,
                         .rank = rank,
                         .detail = "hung: no progress for " + format_seconds(silent) + " (timeout " +
                                   format_seconds(heartbeat_timeout_) + "), last seen " + where(beat->second)};
  }
  return std::nullopt;
}

std::optional<HealthVerdict> HealthWatch::find_rendezvous_timeout(TimePoint now, std::int32_t world_size,
                                                                  const std::map<std::int32_t, TimePoint>& joined) const {
  if (rdzv_timeout_.count() == 0) return std::nullopt;  // zero: no timeout, as everywhere else
  if (joined.empty() || static_cast<std::int32_t>(joined.size()) >= world_size) return std::nullopt;
  const auto first = std::min_element(joined.begin(), joined.end(),
                                      [](const auto& a, const auto& b) { return a.second < b.second; });
  if (now - first->second < rdzv_timeout_) return std::nullopt;
  std::string missing;
  std::int32_t first_missing = -1;
  for (std::int32_t rank = 0; rank < world_size; ++rank) {
    if (joined.contains(rank)) continue;
    if (first_missing < 0) first_missing = rank;
    missing += (missing.empty() ? "" : ", ") + std::to_string(rank);
  }
  return HealthVerdict{.kind = HealthVerdict::Kind::kRendezvousTimeout,
                       .rank = first_missing,
                       .detail = "the rendezvous timed out after " + format_seconds(rdzv_timeout_) + ": rank(s) " +
                                 missing + " never joined (raise --rdzv-timeout if they are just slow to start)"};
}

milliseconds HealthWatch::heartbeat_interval() const {
  // Never slower than 2 s: heartbeats also carry the progress a status page shows.
  if (heartbeat_timeout_.count() == 0) return milliseconds(2000);
  return std::clamp(heartbeat_timeout_ / 4, milliseconds(50), milliseconds(2000));
}

}  // namespace fabric::launcher
