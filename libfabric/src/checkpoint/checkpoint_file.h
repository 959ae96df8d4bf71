// Checkpoint files in torch.save's format (a zip of data.pkl and one record per storage):
// written atomically and readable by Python's torch.load(weights_only=True); read back
// with every record's CRC-32 verified, so truncation and corruption are errors, not data.
#pragma once

#include <torch/types.h>

#include <string>

namespace fabric::checkpoint {

void write_checkpoint(const std::string& path, const torch::IValue& value);

// All tensors come back on the CPU. Throws CheckpointError naming the file and the problem.
torch::IValue read_checkpoint(const std::string& path);

}  // namespace fabric::checkpoint
