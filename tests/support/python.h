// Running the Python reference scripts from tests, and reading what torch.save wrote.
#pragma once

#include <torch/torch.h>

#include <cstdlib>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>

#include "support/temp_dir.h"

namespace fabric::testing {

// Runs `FABRIC_PYTHON script args` from the source tree; returns the exit status.
inline int run_python(const std::string& script, const std::string& args) {
  const std::string command =
      std::string(FABRIC_PYTHON) + " " + FABRIC_SOURCE_DIR + "/" + script + " " + args;
  return std::system(command.c_str());
}

// Reads a file written by Python's torch.save.
inline torch::IValue load_torch_file(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  return torch::pickle_load(bytes);
}

}  // namespace fabric::testing
