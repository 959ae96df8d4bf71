#include "fabric/checkpoint_io.h"

#include <ftw.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "checkpoint/checkpoint_file.h"
#include "fabric/errors.h"

namespace fabric {

// nftw, not std::filesystem::remove_all: libtorch.so exports a copy of the latter that
// crashes (libfabric/README.md).
void CheckpointIO::remove_checkpoint(const std::string& path) {
  struct stat info;
  if (::lstat(path.c_str(), &info) != 0 && errno == ENOENT) return;
  const auto remove = [](const char* entry, const struct stat*, int, struct FTW*) { return std::remove(entry); };
  if (::nftw(path.c_str(), remove, 16, FTW_DEPTH | FTW_PHYS) != 0) {
    throw CheckpointError("Could not remove checkpoint " + path + ": " + std::strerror(errno));
  }
}

void TorchCheckpointIO::save_checkpoint(const c10::IValue& checkpoint, const std::string& path) {
  checkpoint::write_checkpoint(path, checkpoint);
}

c10::IValue TorchCheckpointIO::load_checkpoint(const std::string& path) { return checkpoint::read_checkpoint(path); }

}  // namespace fabric
