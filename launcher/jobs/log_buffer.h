// LogBuffer: the lines a job's ranks wrote, as the coordinator retains them for
// JobService.StreamLogs: the last `per_stream` lines of each rank and stream, each with a
// sequence number in arrival order, so a follower asks for "everything after N" and never
// misses or repeats a line. Not thread-safe: the coordinator's lock guards it.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <set>
#include <utility>
#include <vector>

#include "fabric/v1/job.pb.h"

namespace fabric::launcher {

struct LogFilter {
  std::set<std::int32_t> ranks;  // empty: all
  fabric::v1::LogStream stream = fabric::v1::LOG_STREAM_UNSPECIFIED;  // unspecified: both
  bool matches(const fabric::v1::LogLine& line) const {
    return (ranks.empty() || ranks.contains(line.rank())) &&
           (stream == fabric::v1::LOG_STREAM_UNSPECIFIED || stream == line.stream());
  }
};

class LogBuffer {
 public:
  explicit LogBuffer(std::size_t per_stream) : per_stream_(per_stream) {}

  void append(fabric::v1::LogLine line);
  std::uint64_t last_sequence() const { return next_sequence_ - 1; }

  // The retained lines matching `filter`, in arrival order: at most `tail` per rank and
  // stream (-1: all retained), with their sequence numbers.
  std::vector<std::pair<std::uint64_t, fabric::v1::LogLine>> tail(const LogFilter& filter, std::int32_t tail) const;
  // The matching lines that arrived after sequence `after`, in arrival order.
  std::vector<std::pair<std::uint64_t, fabric::v1::LogLine>> since(const LogFilter& filter, std::uint64_t after) const;

 private:
  using Key = std::pair<std::int32_t, int>;  // (rank, stream)
  const std::size_t per_stream_;
  std::uint64_t next_sequence_ = 1;
  std::map<Key, std::deque<std::pair<std::uint64_t, fabric::v1::LogLine>>> streams_;
};

}  // namespace fabric::launcher
