// metrics.csv as Lightning's CSVLogger writes it (its _ExperimentWriter): rows are buffered
// and written on save(); the header is the sorted union of every key ever logged plus
// "step"; a row lacking a column leaves its cell empty. Keys new to the file rewrite it with
// the widened header (via a temporary file and a rename), otherwise rows are appended. The
// dialect is Python's csv module's: "\r\n" line ends, fields quoted only when they must be.
#pragma once

#include <cstdint>
#include <istream>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace fabric::loggers {

class MetricsCsv {
 public:
  static constexpr std::string_view kStepColumn = "step";

  explicit MetricsCsv(std::string path) : path_(std::move(path)) {}

  void add_row(std::int64_t step, std::map<std::string, double> metrics);
  std::size_t buffered_rows() const { return rows_.size(); }
  // Writes the buffered rows. If it throws, the rows stay buffered for the next save().
  void save();
  const std::string& path() const { return path_; }

 private:
  struct Row {
    std::int64_t step;
    std::map<std::string, double> metrics;
  };

  std::string format_row(const Row& row, const std::vector<std::string>& columns) const;
  // The file's records, its header first.
  std::vector<std::vector<std::string>> read_records() const;

  std::string path_;
  std::vector<std::string> columns_;  // the header last written, sorted
  std::vector<Row> rows_;
};

// One field as Python's csv.writer (QUOTE_MINIMAL) writes it.
std::string csv_field(std::string_view text);
// Reads one record (quoted fields may span lines; "\r\n" or "\n" ends it). False at the end.
bool read_csv_record(std::istream& in, std::vector<std::string>& fields);

}  // namespace fabric::loggers
