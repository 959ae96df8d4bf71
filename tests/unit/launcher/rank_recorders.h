// What a RankGroup reports, kept for a test to wait on: every output line (CollectingSink)
// and every exit (ExitRecorder). Each wait is on a condition with a deadline (kPatience),
// never a fixed sleep.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "ranks/rank_group.h"

namespace fabric::testing {

using launcher::LineSink;
using launcher::OutputLine;
using launcher::RankEnded;
using launcher::RankGroup;
using namespace std::chrono_literals;

// How long a test waits for something that should happen at once; a failure, not a pause.
constexpr auto kPatience = 30s;

// Every line the group read, with a way to wait for one.
class CollectingSink final : public LineSink {
 public:
  void write(const OutputLine& line) override {
    {
      std::lock_guard lock(mutex_);
      lines_.push_back(line);
    }
    changed_.notify_all();
  }
  // Waits until `count` lines satisfy `predicate`; false at the deadline.
  bool wait_for(const std::function<bool(const OutputLine&)>& predicate, std::size_t count = 1) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, kPatience, [&] {
      std::size_t matching = 0;
      for (const auto& line : lines_) matching += predicate(line) ? 1 : 0;
      return matching >= count;
    });
  }
  bool wait_for_text(const std::string& text, std::size_t count = 1) {
    return wait_for([&](const OutputLine& line) { return line.text == text; }, count);
  }
  std::vector<OutputLine> lines() const {
    std::lock_guard lock(mutex_);
    return lines_;
  }
  std::vector<OutputLine> of(std::int32_t rank) const {
    std::vector<OutputLine> mine;
    for (const auto& line : lines()) {
      if (line.rank == rank) mine.push_back(line);
    }
    return mine;
  }
  // The text of the first line of `rank` that starts with `prefix`, without it.
  std::optional<std::string> value(std::int32_t rank, const std::string& prefix) const {
    for (const auto& line : of(rank)) {
      if (line.text.rfind(prefix, 0) == 0) return line.text.substr(prefix.size());
    }
    return std::nullopt;
  }

 private:
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<OutputLine> lines_;
};

// The exit callback's reports, with a way to wait for them.
class ExitRecorder {
 public:
  RankGroup::ExitCallback callback() {
    return [this](const RankEnded& ended) {
      {
        std::lock_guard lock(mutex_);
        exits_.push_back(ended);
      }
      changed_.notify_all();
    };
  }
  bool wait_for(std::size_t count) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, kPatience, [&] { return exits_.size() >= count; });
  }
  std::vector<RankEnded> exits() const {
    std::lock_guard lock(mutex_);
    return exits_;
  }
  std::optional<RankEnded> of(std::int32_t rank) const {
    for (const auto& ended : exits()) {
      if (ended.rank == rank) return ended;
    }
    return std::nullopt;
  }

 private:
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<RankEnded> exits_;
};

}  // namespace fabric::testing
