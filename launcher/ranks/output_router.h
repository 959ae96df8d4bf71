// Where a rank's output lines go. Each line of a rank's stdout or stderr is read whole by
// the rank group and handed to one LineSink; the OutputRouter fans it out to several (the
// console, per-rank files, the tail kept for failure summaries, an agent's log pusher).
//
// Threading: write() is called concurrently from every rank's reader threads; each sink
// serialises itself, so lines are never interleaved mid-line.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <ostream>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace fabric::launcher {

struct OutputLine {
  std::int32_t rank = 0;        // global rank
  std::int32_t local_rank = 0;
  std::int32_t generation = 0;
  bool is_stderr = false;
  std::string text;             // without its newline
};

class LineSink {
 public:
  virtual ~LineSink() = default;
  virtual void write(const OutputLine& line) = 0;
};

// Which of a rank's two streams a sink takes.
struct StreamSelection {
  bool stdout_lines = true;
  bool stderr_lines = true;
  bool takes(const OutputLine& line) const { return line.is_stderr ? stderr_lines : stdout_lines; }
};

// Fans each line out to every sink added; sinks are shared so an agent can keep one (its
// log pusher) across generations.
class OutputRouter final : public LineSink {
 public:
  void add(std::shared_ptr<LineSink> sink) { sinks_.push_back(std::move(sink)); }
  void write(const OutputLine& line) override {
    for (const auto& sink : sinks_) sink->write(line);
  }

 private:
  std::vector<std::shared_ptr<LineSink>> sinks_;  // fixed before the first write()
};

// "[rank 3] text" on out (stdout lines) or err (stderr lines), for the selected streams and
// ranks (empty: all ranks). What `fabricd run` shows on its terminal.
class ConsoleSink final : public LineSink {
 public:
  ConsoleSink(std::ostream& out, std::ostream& err, StreamSelection streams, std::set<std::int32_t> ranks = {})
      : out_(out), err_(err), streams_(streams), ranks_(std::move(ranks)) {}
  void write(const OutputLine& line) override;
  // The launcher's own line, "fabricd: text" on err, never mid-way through a rank's line.
  void message(const std::string& text);

 private:
  std::ostream& out_;
  std::ostream& err_;
  const StreamSelection streams_;
  const std::set<std::int32_t> ranks_;
  std::mutex mutex_;
};

// Appends each selected line to <dir>/rank_N.stdout.log or rank_N.stderr.log (torchrun's
// names); a file is created on its first line, so an unselected stream leaves none.
class FileSink final : public LineSink {
 public:
  FileSink(std::string dir, StreamSelection streams) : dir_(std::move(dir)), streams_(streams) {}
  ~FileSink() override;
  void write(const OutputLine& line) override;

 private:
  const std::string dir_;
  const StreamSelection streams_;
  std::mutex mutex_;
  std::map<std::pair<std::int32_t, bool>, std::unique_ptr<std::ostream>> files_;  // (rank, is_stderr)
};

// The last `lines` stderr lines of each rank: what a failure summary quotes.
class StderrTail final : public LineSink {
 public:
  explicit StderrTail(std::size_t lines) : capacity_(lines) {}
  void write(const OutputLine& line) override;
  std::vector<std::string> of(std::int32_t rank) const;
  void clear();

 private:
  const std::size_t capacity_;
  mutable std::mutex mutex_;
  std::map<std::int32_t, std::deque<std::string>> tails_;
};

}  // namespace fabric::launcher
