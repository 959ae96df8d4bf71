#include "loggers/metrics_csv.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <fstream>
#include <set>

#include "fabric/loggers.h"
#include "loggers/files.h"
#include "loggers/text_format.h"

namespace fabric::loggers {
namespace {

constexpr std::string_view kLineEnd = "\r\n";

std::string format_record(const std::vector<std::string>& fields) {
  std::string line;
  for (std::size_t i = 0; i < fields.size(); ++i) {
    if (i > 0) line.push_back(',');
    line += csv_field(fields[i]);
  }
  line += kLineEnd;
  return line;
}

void append_to_file(const std::string& path, std::string_view text) {
  std::FILE* file = std::fopen(path.c_str(), "ab");
  if (file == nullptr) files::throw_io_error("Opening", path, errno);
  const bool written = std::fwrite(text.data(), 1, text.size(), file) == text.size();
  const int write_errno = errno;
  if (std::fclose(file) != 0 || !written) files::throw_io_error("Appending to", path, written ? errno : write_errno);
}

}  // namespace

std::string csv_field(std::string_view text) {
  if (text.find_first_of(",\"\r\n") == std::string_view::npos) return std::string(text);
  std::string quoted = "\"";
  for (const char c : text) {
    if (c == '"') quoted.push_back('"');
    quoted.push_back(c);
  }
  quoted.push_back('"');
  return quoted;
}

bool read_csv_record(std::istream& in, std::vector<std::string>& fields) {
  fields.clear();
  if (in.peek() == std::char_traits<char>::eof()) return false;
  std::string field;
  bool quoted = false;
  for (int next = in.get(); next != std::char_traits<char>::eof(); next = in.get()) {
    const char c = static_cast<char>(next);
    if (quoted) {
      if (c != '"') {
        field.push_back(c);
      } else if (in.peek() == '"') {
        field.push_back(static_cast<char>(in.get()));
      } else {
        quoted = false;
      }
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      fields.push_back(std::move(field));
      field.clear();
    } else if (c == '\r' || c == '\n') {
      if (c == '\r' && in.peek() == '\n') in.get();
      break;
    } else {
      field.push_back(c);
    }
  }
  fields.push_back(std::move(field));
  return true;
}

void MetricsCsv::add_row(std::int64_t step, std::map<std::string, double> metrics) {
  rows_.push_back({step, std::move(metrics)});
}

std::string MetricsCsv::format_row(const Row& row, const std::vector<std::string>& columns) const {
  std::vector<std::string> fields;
  fields.reserve(columns.size());
  for (const std::string& column : columns) {
    if (column == kStepColumn) {
      fields.push_back(std::to_string(row.step));
    } else if (const auto it = row.metrics.find(column); it != row.metrics.end()) {
      fields.push_back(python_float_repr(it->second));
    } else {
      fields.emplace_back();
    }
  }
  return format_record(fields);
}

std::vector<std::vector<std::string>> MetricsCsv::read_records() const {
  std::ifstream in(path_, std::ios::binary);
  if (!in) files::throw_io_error("Reading", path_, errno);
  std::vector<std::vector<std::string>> records;
  for (std::vector<std::string> record; read_csv_record(in, record);) records.push_back(record);
  if (in.bad()) files::throw_io_error("Reading", path_, errno);
  return records;
}

void MetricsCsv::save() {
  if (rows_.empty()) return;
  std::set<std::string> keys(columns_.begin(), columns_.end());
  keys.emplace(kStepColumn);
  for (const Row& row : rows_) {
    for (const auto& [key, value] : row.metrics) keys.insert(key);
  }
  const bool file_exists = files::exists(path_);
  if (file_exists && keys.size() == columns_.size()) {
    std::string text;
    for (const Row& row : rows_) text += format_row(row, columns_);
    append_to_file(path_, text);
    rows_.clear();
    return;
  }
  // A new file, or keys its header lacks: write the whole file under the widened header.
  // The existing header's columns are kept even if this writer did not write them.
  const std::vector<std::vector<std::string>> existing =
      file_exists ? read_records() : std::vector<std::vector<std::string>>{};
  if (!existing.empty()) keys.insert(existing.front().begin(), existing.front().end());
  std::vector<std::string> columns(keys.begin(), keys.end());
  std::string text = format_record(columns);
  if (!existing.empty()) {
    const std::vector<std::string>& header = existing.front();
    for (auto record = existing.begin() + 1; record != existing.end(); ++record) {
      std::vector<std::string> fields(columns.size());
      for (std::size_t i = 0; i < record->size() && i < header.size(); ++i) {
        const auto column = std::lower_bound(columns.begin(), columns.end(), header[i]);
        fields[static_cast<std::size_t>(column - columns.begin())] = (*record)[i];
      }
      text += format_record(fields);
    }
  }
  for (const Row& row : rows_) text += format_row(row, columns);
  files::replace_file(path_, text);
  columns_ = std::move(columns);
  rows_.clear();
}

}  // namespace fabric::loggers
