#include "fabric/checkpoint_io.h"

#include <filesystem>
#include <system_error>

#include "checkpoint/checkpoint_file.h"
#include "fabric/errors.h"

namespace fabric {

void CheckpointIO::remove_checkpoint(const std::string& path) {
  std::error_code error;
  std::filesystem::remove_all(path, error);
  if (error) throw CheckpointError("Could not remove checkpoint " + path + ": " + error.message());
}

void TorchCheckpointIO::save_checkpoint(const c10::IValue& checkpoint, const std::string& path) {
  checkpoint::write_checkpoint(path, checkpoint);
}

c10::IValue TorchCheckpointIO::load_checkpoint(const std::string& path) { return checkpoint::read_checkpoint(path); }

}  // namespace fabric
