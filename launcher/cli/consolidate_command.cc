// fabricd consolidate FOLDER FILE: an fsdp run's sharded checkpoint folder as one file that
// Python's torch.load opens (Lightning's `fabric consolidate`). Reading and writing
// checkpoints needs LibTorch, which fabricd does not link, so this runs fabric-consolidate
// (built and installed with libfabric): the one beside this binary, else the one on PATH.
#include <limits.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "cli/commands.h"
#include "cli/job_flags.h"

namespace fabric::launcher::cli {
namespace {

constexpr const char* kHelper = "fabric-consolidate";

std::string beside_this_binary() {
  char self[PATH_MAX];
  const ssize_t length = ::readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (length <= 0) return {};
  std::string path(self, static_cast<std::size_t>(length));
  return path.substr(0, path.find_last_of('/') + 1) + kHelper;
}

}  // namespace

Registered add_consolidate(CLI::App& app) {
  auto* command = app.add_subcommand("consolidate",
                                     "Turn an fsdp run's sharded checkpoint folder into one file that torch.load opens");
  auto folder = std::make_shared<std::string>();
  auto file = std::make_shared<std::string>();
  command->add_option("FOLDER", *folder, "The folder fabric.save wrote under fsdp (state_dict_type=\"sharded\")")
      ->required();
  command->add_option("FILE", *file, "Where to write the full checkpoint")->required();
  return {command, [folder, file](const std::vector<std::string>&) {
            const std::string beside = beside_this_binary();
            char* const argv[] = {const_cast<char*>(kHelper), folder->data(), file->data(), nullptr};
            if (!beside.empty() && ::access(beside.c_str(), X_OK) == 0) ::execv(beside.c_str(), argv);
            ::execvp(kHelper, argv);
            return fail(kUsageError, std::string("consolidate runs ") + kHelper + ", which is installed with libfabric " +
                                         "(libfabric-dev), but it is neither beside fabricd nor on PATH (" +
                                         std::strerror(errno) + ").");
          }};
}

}  // namespace fabric::launcher::cli
