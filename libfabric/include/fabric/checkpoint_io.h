// A CheckpointIO plugin owns the bytes of a checkpoint: how the state that fabric.save
// built (a dict of plain values: modules and optimizers already turned into their state
// dicts) goes to a path, and how fabric.load / load_raw read it back. The default,
// TorchCheckpointIO, writes torch.save's format atomically and verifies every byte on
// load; a user's subclass (another format, a remote store) goes in FabricOptions::plugins.
#pragma once

#include <ATen/core/ivalue.h>

#include <string>

namespace fabric {

class CheckpointIO {
 public:
  virtual ~CheckpointIO() = default;

  // Writes `checkpoint` to `path` so that a crash leaves either the old file or the new one.
  virtual void save_checkpoint(const c10::IValue& checkpoint, const std::string& path) = 0;
  // What save_checkpoint wrote, tensors on the CPU; CheckpointError when it cannot be read whole.
  virtual c10::IValue load_checkpoint(const std::string& path) = 0;
  // Deletes the checkpoint at `path` (a file or a folder); nothing there is not an error.
  virtual void remove_checkpoint(const std::string& path);
};

// torch.save's zip format, readable by Python's torch.load(weights_only=True): written to
// a temporary file, synced and renamed over `path`; read back with every record's CRC-32
// checked, so a truncated or corrupted file is refused, never half-loaded.
class TorchCheckpointIO : public CheckpointIO {
 public:
  void save_checkpoint(const c10::IValue& checkpoint, const std::string& path) override;
  c10::IValue load_checkpoint(const std::string& path) override;
};

}  // namespace fabric
