// Helpers the benchmarks share.
#pragma once

#include <algorithm>
#include <cstdio>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

namespace bench {

// Runs `command` through the shell and returns its standard output (a baseline's JSON).
inline std::string run_command(const std::string& command) {
  std::string output;
  std::unique_ptr<FILE, decltype(&pclose)> pipe(popen(command.c_str(), "r"), &pclose);
  char buffer[4096];
  while (pipe && fgets(buffer, sizeof(buffer), pipe.get())) output += buffer;
  return output;
}

inline double median(std::vector<double> values) {
  if (values.empty()) return -1;
  std::sort(values.begin(), values.end());
  const std::size_t n = values.size();
  return n % 2 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

// Two sides measured in alternating rounds (ours first in even rounds, theirs first in odd
// ones), so that a machine that speeds up or slows down favours neither; the ratio of each
// round is ours / theirs, and a ratio is reported as the median of those with its spread.
struct Comparison {
  std::vector<double> ours, theirs;

  double ratio() const { return median(ratios()); }
  double ratio_min() const {
    const std::vector<double> all = ratios();
    return all.empty() ? -1 : *std::min_element(all.begin(), all.end());
  }
  double ratio_max() const {
    const std::vector<double> all = ratios();
    return all.empty() ? -1 : *std::max_element(all.begin(), all.end());
  }
  std::vector<double> ratios() const {
    std::vector<double> ratios;
    for (std::size_t i = 0; i < ours.size() && i < theirs.size(); ++i) ratios.push_back(ours[i] / theirs[i]);
    return ratios;
  }
  // The fields every benchmark line shares after "case": metric, both medians, the ratio
  // with its spread, the rounds. `better` is "higher" or "lower".
  std::string json(const std::string& metric, const std::string& baseline, const char* better,
                   const char* number_format = "%.3f") const {
    char ours_text[32], theirs_text[32];
    std::snprintf(ours_text, sizeof(ours_text), number_format, median(ours));
    std::snprintf(theirs_text, sizeof(theirs_text), number_format, median(theirs));
    char tail[512];
    std::snprintf(tail, sizeof(tail),
                  "\"metric\": \"%s\", \"ours\": %s, \"baseline\": \"%s\", \"theirs\": %s, \"ratio\": %.3f, "
                  "\"ratio_min\": %.3f, \"ratio_max\": %.3f, \"rounds\": %zu, \"better\": \"%s\"",
                  metric.c_str(), ours_text, baseline.c_str(), theirs_text, ratio(), ratio_min(), ratio_max(),
                  ratios().size(), better);
    return tail;
  }
};

// `rounds` alternating rounds of `measure_ours` and `measure_theirs` (each returns one value).
inline Comparison alternate(int rounds, const std::function<double()>& measure_ours,
                            const std::function<double()>& measure_theirs) {
  Comparison comparison;
  for (int round = 0; round < rounds; ++round) {
    if (round % 2 == 0) {
      comparison.ours.push_back(measure_ours());
      comparison.theirs.push_back(measure_theirs());
    } else {
      comparison.theirs.push_back(measure_theirs());
      comparison.ours.push_back(measure_ours());
    }
  }
  return comparison;
}

// "1,2,4" as numbers, for the benches' list flags (--cases, --sizes).
inline std::vector<int> parse_int_list(const std::string& text) {
  std::vector<int> numbers;
  std::stringstream list(text);
  for (std::string n; std::getline(list, n, ',');) numbers.push_back(std::stoi(n));
  return numbers;
}

}  // namespace bench
