// LogBuffer (launcher/jobs/log_buffer.h): retention per rank and stream, tail(-1 /
// 0 / N), since(sequence) in arrival order, and the rank and stream filters.

#include "jobs/log_buffer.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace {

namespace v1 = fabric::v1;
using fabric::launcher::LogBuffer;
using fabric::launcher::LogFilter;

v1::LogLine line(std::int32_t rank, v1::LogStream stream, const std::string& text) {
  v1::LogLine l;
  l.set_job_id("job");
  l.set_rank(rank);
  l.set_stream(stream);
  l.set_text(text);
  return l;
}

std::vector<std::string> texts(const std::vector<std::pair<std::uint64_t, v1::LogLine>>& lines) {
  std::vector<std::string> out;
  for (const auto& [sequence, l] : lines) out.push_back(l.text());
  return out;
}

std::vector<std::uint64_t> sequences(const std::vector<std::pair<std::uint64_t, v1::LogLine>>& lines) {
  std::vector<std::uint64_t> out;
  for (const auto& [sequence, l] : lines) out.push_back(sequence);
  return out;
}

// Lines of two ranks and both streams, interleaved as an agent would push them.
LogBuffer filled(std::size_t per_stream) {
  LogBuffer buffer(per_stream);
  buffer.append(line(0, v1::LOG_STREAM_STDOUT, "0 out a"));  // 1
  buffer.append(line(1, v1::LOG_STREAM_STDOUT, "1 out a"));  // 2
  buffer.append(line(0, v1::LOG_STREAM_STDERR, "0 err a"));  // 3
  buffer.append(line(0, v1::LOG_STREAM_STDOUT, "0 out b"));  // 4
  buffer.append(line(1, v1::LOG_STREAM_STDOUT, "1 out b"));  // 5
  buffer.append(line(0, v1::LOG_STREAM_STDOUT, "0 out c"));  // 6
  return buffer;
}

TEST(LogBuffer, SequencesCountEveryLineInArrivalOrder) {
  LogBuffer buffer(10);
  EXPECT_EQ(buffer.last_sequence(), 0u);
  buffer.append(line(0, v1::LOG_STREAM_STDOUT, "x"));
  buffer.append(line(3, v1::LOG_STREAM_STDERR, "y"));
  EXPECT_EQ(buffer.last_sequence(), 2u);
  EXPECT_EQ(sequences(buffer.tail({}, -1)), (std::vector<std::uint64_t>{1, 2}));
}

TEST(LogBuffer, TailAll_IsEveryRetainedLineInArrivalOrder) {
  const LogBuffer buffer = filled(10);
  EXPECT_EQ(texts(buffer.tail({}, -1)),
            (std::vector<std::string>{"0 out a", "1 out a", "0 err a", "0 out b", "1 out b", "0 out c"}));
}

TEST(LogBuffer, RetentionIsPerRankAndStream) {
  const LogBuffer buffer = filled(2);
  // Rank 0's stdout lost its oldest line; its stderr and rank 1's lines kept theirs.
  EXPECT_EQ(texts(buffer.tail({}, -1)),
            (std::vector<std::string>{"1 out a", "0 err a", "0 out b", "1 out b", "0 out c"}));
  EXPECT_EQ(buffer.last_sequence(), 6u);
}

TEST(LogBuffer, TailZero_IsNothing_AndTailN_IsTheLastNOfEachRankAndStream) {
  const LogBuffer buffer = filled(10);
  EXPECT_TRUE(buffer.tail({}, 0).empty());
  EXPECT_EQ(texts(buffer.tail({}, 1)), (std::vector<std::string>{"0 err a", "1 out b", "0 out c"}));
  EXPECT_EQ(texts(buffer.tail({}, 2)),  // rank 0's stdout loses "0 out a"; the others have at most 2
            (std::vector<std::string>{"1 out a", "0 err a", "0 out b", "1 out b", "0 out c"}));
}

TEST(LogBuffer, Since_IsWhatArrivedAfterTheSequence_InArrivalOrder) {
  const LogBuffer buffer = filled(10);
  EXPECT_EQ(texts(buffer.since({}, 3)), (std::vector<std::string>{"0 out b", "1 out b", "0 out c"}));
  EXPECT_EQ(sequences(buffer.since({}, 3)), (std::vector<std::uint64_t>{4, 5, 6}));
  EXPECT_TRUE(buffer.since({}, buffer.last_sequence()).empty());
  EXPECT_EQ(buffer.since({}, 0).size(), 6u);
}

TEST(LogBuffer, Since_NeverReturnsLinesNoLongerRetained) {
  const LogBuffer buffer = filled(1);
  EXPECT_EQ(texts(buffer.since({}, 0)), (std::vector<std::string>{"0 err a", "1 out b", "0 out c"}));
}

TEST(LogBuffer, FiltersByRankAndStream) {
  const LogBuffer buffer = filled(10);
  EXPECT_EQ(texts(buffer.tail(LogFilter{.ranks = {1}}, -1)), (std::vector<std::string>{"1 out a", "1 out b"}));
  EXPECT_EQ(texts(buffer.tail(LogFilter{.stream = v1::LOG_STREAM_STDERR}, -1)), std::vector<std::string>{"0 err a"});
  EXPECT_EQ(texts(buffer.since(LogFilter{.ranks = {0}, .stream = v1::LOG_STREAM_STDOUT}, 1)),
            (std::vector<std::string>{"0 out b", "0 out c"}));
  EXPECT_TRUE(buffer.tail(LogFilter{.ranks = {7}}, -1).empty());
  EXPECT_EQ(buffer.tail(LogFilter{.ranks = {0, 1}}, -1).size(), 6u);
}

TEST(LogFilter, MatchesLines) {
  const LogFilter filter{.ranks = {2}, .stream = v1::LOG_STREAM_STDOUT};
  EXPECT_TRUE(filter.matches(line(2, v1::LOG_STREAM_STDOUT, "")));
  EXPECT_FALSE(filter.matches(line(2, v1::LOG_STREAM_STDERR, "")));
  EXPECT_FALSE(filter.matches(line(3, v1::LOG_STREAM_STDOUT, "")));
  EXPECT_TRUE(LogFilter{}.matches(line(9, v1::LOG_STREAM_STDERR, "")));
}

}  // namespace
