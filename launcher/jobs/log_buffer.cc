#include "jobs/log_buffer.h"

#include <algorithm>

namespace fabric::launcher {

void LogBuffer::append(fabric::v1::LogLine line) {
  auto& lines = streams_[{line.rank(), static_cast<int>(line.stream())}];
  lines.emplace_back(next_sequence_++, std::move(line));
  while (lines.size() > per_stream_) lines.pop_front();
}

namespace {

void by_arrival(std::vector<std::pair<std::uint64_t, fabric::v1::LogLine>>& lines) {
  std::sort(lines.begin(), lines.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
}

}  // namespace

std::vector<std::pair<std::uint64_t, fabric::v1::LogLine>> LogBuffer::tail(const LogFilter& filter,
                                                                           std::int32_t tail) const {
  std::vector<std::pair<std::uint64_t, fabric::v1::LogLine>> out;
  if (tail == 0) return out;
  for (const auto& [key, lines] : streams_) {
    if (lines.empty() || !filter.matches(lines.front().second)) continue;
    const std::size_t skip =
        tail < 0 || lines.size() <= static_cast<std::size_t>(tail) ? 0 : lines.size() - static_cast<std::size_t>(tail);
    out.insert(out.end(), lines.begin() + static_cast<std::ptrdiff_t>(skip), lines.end());
  }
  by_arrival(out);
  return out;
}

std::vector<std::pair<std::uint64_t, fabric::v1::LogLine>> LogBuffer::since(const LogFilter& filter,
                                                                            std::uint64_t after) const {
  std::vector<std::pair<std::uint64_t, fabric::v1::LogLine>> out;
  for (const auto& [key, lines] : streams_) {
    if (lines.empty() || !filter.matches(lines.front().second)) continue;
    auto first = std::upper_bound(lines.begin(), lines.end(), after,
                                  [](std::uint64_t value, const auto& line) { return value < line.first; });
    out.insert(out.end(), first, lines.end());
  }
  by_arrival(out);
  return out;
}

}  // namespace fabric::launcher
