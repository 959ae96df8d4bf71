// How the loggers spell values in text files, matching what Lightning's Python writes so
// that files from either are interchangeable: floats as Python's repr() (metrics.csv via
// the csv module) and hyperparameters as PyYAML's yaml.dump (hparams.yaml).
#pragma once

#include <map>
#include <string>
#include <string_view>

#include "fabric/loggers.h"

namespace fabric::loggers {

// Python's repr(float): the shortest string that reads back to the same double, in fixed
// notation for 1e-4 <= |x| < 1e16 with at least one decimal ("1.0", "0.0001", "100000.0"),
// otherwise scientific ("1e-05", "1.5e+16"); "nan", "inf", "-inf".
std::string python_float_repr(double value);

// hparams.yaml's text: one "key: value" line per entry in key order, as PyYAML's yaml.dump
// writes a flat dict ("{}" when empty). Strings that YAML would read as another type, or that
// hold characters outside [A-Za-z0-9_./-], are quoted.
std::string hparams_yaml(const std::map<std::string, HyperparameterValue>& params);

}  // namespace fabric::loggers
