#include "ranks/output_router.h"

#include <fstream>

namespace fabric::launcher {

void ConsoleSink::write(const OutputLine& line) {
  if (!streams_.takes(line) || (!ranks_.empty() && !ranks_.contains(line.rank))) return;
  std::lock_guard lock(mutex_);
  (line.is_stderr ? err_ : out_) << "[rank " << line.rank << "] " << line.text << '\n' << std::flush;
}

void ConsoleSink::message(const std::string& text) {
  std::lock_guard lock(mutex_);
  err_ << "fabricd: " << text << std::endl;
}

FileSink::~FileSink() = default;

void FileSink::write(const OutputLine& line) {
  if (!streams_.takes(line)) return;
  std::lock_guard lock(mutex_);
  auto& file = files_[{line.rank, line.is_stderr}];
  if (!file) {
    file = std::make_unique<std::ofstream>(
        dir_ + "/rank_" + std::to_string(line.rank) + (line.is_stderr ? ".stderr.log" : ".stdout.log"), std::ios::app);
  }
  *file << line.text << '\n' << std::flush;
}

void StderrTail::write(const OutputLine& line) {
  if (!line.is_stderr || capacity_ == 0) return;
  std::lock_guard lock(mutex_);
  auto& tail = tails_[line.rank];
  tail.push_back(line.text);
  if (tail.size() > capacity_) tail.pop_front();
}

std::vector<std::string> StderrTail::of(std::int32_t rank) const {
  std::lock_guard lock(mutex_);
  const auto it = tails_.find(rank);
  if (it == tails_.end()) return {};
  return {it->second.begin(), it->second.end()};
}

void StderrTail::clear() {
  std::lock_guard lock(mutex_);
  tails_.clear();
}

}  // namespace fabric::launcher
