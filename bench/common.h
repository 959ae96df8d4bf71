// Helpers the benchmarks share.
#pragma once

#include <cstdio>
#include <memory>
#include <string>

namespace bench {

// Runs `command` through the shell and returns its standard output (a baseline's JSON).
inline std::string run_command(const std::string& command) {
  std::string output;
  std::unique_ptr<FILE, decltype(&pclose)> pipe(popen(command.c_str(), "r"), &pclose);
  char buffer[4096];
  while (pipe && fgets(buffer, sizeof(buffer), pipe.get())) output += buffer;
  return output;
}

}  // namespace bench
