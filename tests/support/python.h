// Running the Python reference scripts from tests, and reading what torch.save wrote.
#pragma once

#include <torch/torch.h>

#include <ftw.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>

namespace fabric::testing {

// A fresh directory under /tmp, removed when the object dies. POSIX calls on purpose:
// libtorch.so exports its own copies of several std::filesystem functions (remove_all among
// them) that programs linking it bind to, and they crash; see libfabric/README.md.
class ScopedTempDir {
 public:
  ScopedTempDir() {
    std::string pattern = "/tmp/fabric-test-XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  ~ScopedTempDir() {
    ::nftw(path_.c_str(), [](const char* path, const struct stat*, int, struct FTW*) { return ::remove(path); }, 16,
           FTW_DEPTH | FTW_PHYS);
  }
  ScopedTempDir(const ScopedTempDir&) = delete;
  ScopedTempDir& operator=(const ScopedTempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// Runs `FABRIC_PYTHON script args` from the source tree; returns the exit status.
inline int run_python(const std::string& script, const std::string& args) {
  const std::string command =
      std::string(FABRIC_PYTHON) + " " + FABRIC_SOURCE_DIR + "/" + script + " " + args;
  return std::system(command.c_str());
}

// Reads a file written by Python's torch.save.
inline torch::IValue load_torch_file(const std::filesystem::path& path) {
  std::ifstream file(path, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  return torch::pickle_load(bytes);
}

}  // namespace fabric::testing
