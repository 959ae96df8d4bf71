// The line sinks of launcher/ranks/output_router.h: the console (into ostringstreams), the
// per-rank files (into a temp dir), the stderr tail of failure summaries, and the router's
// fan-out.

#include "ranks/output_router.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "support/temp_dir.h"

namespace {

using fabric::launcher::ConsoleSink;
using fabric::launcher::FileSink;
using fabric::launcher::LineSink;
using fabric::launcher::OutputLine;
using fabric::launcher::OutputRouter;
using fabric::launcher::StderrTail;
using fabric::launcher::StreamSelection;
using fabric::testing::read_file;
using fabric::testing::ScopedTempDir;

OutputLine out_line(std::int32_t rank, std::string text) {
  return OutputLine{.rank = rank, .local_rank = rank, .generation = 0, .is_stderr = false, .text = std::move(text)};
}
OutputLine err_line(std::int32_t rank, std::string text) {
  return OutputLine{.rank = rank, .local_rank = rank, .generation = 0, .is_stderr = true, .text = std::move(text)};
}

bool exists(const std::string& path) { return ::access(path.c_str(), F_OK) == 0; }

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

TEST(StreamSelection, TakesOnlyTheSelectedStreams) {
  const StreamSelection only_err{.stdout_lines = false, .stderr_lines = true};
  EXPECT_FALSE(only_err.takes(out_line(0, "x")));
  EXPECT_TRUE(only_err.takes(err_line(0, "x")));
  EXPECT_TRUE(StreamSelection{}.takes(out_line(0, "x")));
  EXPECT_TRUE(StreamSelection{}.takes(err_line(0, "x")));
}

TEST(ConsoleSink, PrefixesEachLineWithItsRank_OnTheMatchingStream) {
  std::ostringstream out, err;
  ConsoleSink console(out, err, StreamSelection{});
  console.write(out_line(3, "hello"));
  console.write(err_line(1, "oops"));
  console.write(out_line(0, ""));
  EXPECT_EQ(out.str(), "[rank 3] hello\n[rank 0] \n");
  EXPECT_EQ(err.str(), "[rank 1] oops\n");
}

TEST(ConsoleSink, DropsUnselectedStreams) {
  std::ostringstream out, err;
  ConsoleSink console(out, err, StreamSelection{.stdout_lines = true, .stderr_lines = false});
  console.write(out_line(0, "kept"));
  console.write(err_line(0, "dropped"));
  EXPECT_EQ(out.str(), "[rank 0] kept\n");
  EXPECT_EQ(err.str(), "");
}

TEST(ConsoleSink, RankFilter_ShowsOnlyTheListedRanks) {
  std::ostringstream out, err;
  ConsoleSink console(out, err, StreamSelection{}, {1, 3});
  for (std::int32_t rank = 0; rank < 4; ++rank) console.write(out_line(rank, std::string("r").append(std::to_string(rank))));
  EXPECT_EQ(out.str(), "[rank 1] r1\n[rank 3] r3\n");
}

TEST(ConsoleSink, Message_GoesToErrWithTheLauncherPrefix) {
  std::ostringstream out, err;
  ConsoleSink console(out, err, StreamSelection{.stdout_lines = false, .stderr_lines = false});
  console.message("restarting (1 of 3)");
  EXPECT_EQ(out.str(), "");
  EXPECT_EQ(err.str(), "fabricd: restarting (1 of 3)\n");
}

TEST(ConsoleSink, ConcurrentWriters_NeverInterleaveMidLine) {
  std::ostringstream out, err;
  ConsoleSink console(out, err, StreamSelection{});
  constexpr int kThreads = 4, kLines = 500;
  const std::string payload(200, 'x');
  std::vector<std::thread> writers;
  for (int t = 0; t < kThreads; ++t) {
    writers.emplace_back([&, t] {
      for (int i = 0; i < kLines; ++i) console.write(out_line(t, payload));
    });
  }
  for (auto& writer : writers) writer.join();
  const auto lines = lines_of(out.str());
  ASSERT_EQ(lines.size(), static_cast<std::size_t>(kThreads * kLines));
  for (const auto& line : lines) {
    ASSERT_EQ(line.substr(line.find(']') + 2), payload) << line;
  }
}

TEST(FileSink, WritesTorchrunNamedFilesPerRankAndStream) {
  ScopedTempDir dir;
  {
    FileSink files(dir.path(), StreamSelection{});
    files.write(out_line(0, "zero out"));
    files.write(err_line(0, "zero err"));
    files.write(out_line(2, "two out 1"));
    files.write(out_line(2, "two out 2"));
  }
  EXPECT_EQ(read_file(dir / "rank_0.stdout.log"), "zero out\n");
  EXPECT_EQ(read_file(dir / "rank_0.stderr.log"), "zero err\n");
  EXPECT_EQ(read_file(dir / "rank_2.stdout.log"), "two out 1\ntwo out 2\n");
  EXPECT_FALSE(exists(dir / "rank_2.stderr.log"));  // created on its first line only
}

TEST(FileSink, UnselectedStream_LeavesNoFile) {
  ScopedTempDir dir;
  FileSink files(dir.path(), StreamSelection{.stdout_lines = false, .stderr_lines = true});
  files.write(out_line(0, "not kept"));
  files.write(err_line(0, "kept"));
  EXPECT_FALSE(exists(dir / "rank_0.stdout.log"));
  EXPECT_EQ(read_file(dir / "rank_0.stderr.log"), "kept\n");
}

TEST(FileSink, LaterGenerations_AppendToTheSameFiles) {
  ScopedTempDir dir;
  FileSink(dir.path(), StreamSelection{}).write(out_line(1, "generation 0"));
  FileSink(dir.path(), StreamSelection{}).write(out_line(1, "generation 1"));
  EXPECT_EQ(read_file(dir / "rank_1.stdout.log"), "generation 0\ngeneration 1\n");
}

TEST(FileSink, LinesAreOnDiskAsSoonAsWritten) {
  ScopedTempDir dir;
  FileSink files(dir.path(), StreamSelection{});
  files.write(err_line(0, "last words"));
  // Still open: a launcher killed now must have left the line in the file.
  EXPECT_EQ(read_file(dir / "rank_0.stderr.log"), "last words\n");
}

TEST(StderrTail, KeepsTheLastLinesOfEachRanksStderr) {
  StderrTail tail(2);
  tail.write(err_line(0, "a"));
  tail.write(err_line(0, "b"));
  tail.write(err_line(1, "other rank"));
  tail.write(err_line(0, "c"));
  tail.write(out_line(0, "stdout is not kept"));
  EXPECT_EQ(tail.of(0), (std::vector<std::string>{"b", "c"}));
  EXPECT_EQ(tail.of(1), (std::vector<std::string>{"other rank"}));
  EXPECT_TRUE(tail.of(7).empty());
}

TEST(StderrTail, ZeroCapacity_KeepsNothing) {
  StderrTail tail(0);
  tail.write(err_line(0, "a"));
  EXPECT_TRUE(tail.of(0).empty());
}

TEST(StderrTail, Clear_ForgetsEveryRank) {
  StderrTail tail(5);
  tail.write(err_line(0, "a"));
  tail.write(err_line(1, "b"));
  tail.clear();
  EXPECT_TRUE(tail.of(0).empty());
  EXPECT_TRUE(tail.of(1).empty());
  tail.write(err_line(0, "after"));
  EXPECT_EQ(tail.of(0), (std::vector<std::string>{"after"}));
}

class RecordingSink final : public LineSink {
 public:
  void write(const OutputLine& line) override { lines.push_back(line); }
  std::vector<OutputLine> lines;
};

TEST(OutputRouter, FansEachLineOutToEverySink) {
  auto first = std::make_shared<RecordingSink>();
  auto second = std::make_shared<RecordingSink>();
  auto tail = std::make_shared<StderrTail>(10);
  std::ostringstream out, err;
  auto console = std::make_shared<ConsoleSink>(out, err, StreamSelection{});
  OutputRouter router;
  router.add(first);
  router.add(second);
  router.add(tail);
  router.add(console);
  router.write(OutputLine{.rank = 5, .local_rank = 1, .generation = 2, .is_stderr = true, .text = "boom"});
  for (const auto* sink : {first.get(), second.get()}) {
    ASSERT_EQ(sink->lines.size(), 1u);
    EXPECT_EQ(sink->lines[0].rank, 5);
    EXPECT_EQ(sink->lines[0].local_rank, 1);
    EXPECT_EQ(sink->lines[0].generation, 2);
    EXPECT_TRUE(sink->lines[0].is_stderr);
    EXPECT_EQ(sink->lines[0].text, "boom");
  }
  EXPECT_EQ(tail->of(5), (std::vector<std::string>{"boom"}));
  EXPECT_EQ(err.str(), "[rank 5] boom\n");
}

TEST(OutputRouter, WithNoSinks_DropsLines) {
  OutputRouter router;
  router.write(out_line(0, "nowhere"));  // must not crash
}

}  // namespace
