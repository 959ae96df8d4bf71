// The CRC-32 of every member of a zip archive, from its central directory (zip64 included).
// LibTorch's PyTorchStreamReader does not check these when it reads a record, so a flipped
// byte inside a tensor would load silently; the checkpoint reader compares them itself.
#pragma once

#include <cstdint>
#include <map>
#include <string>

namespace fabric::checkpoint {

// Throws CheckpointError if `path` does not end in a well-formed zip central directory.
std::map<std::string, std::uint32_t> read_zip_crcs(const std::string& path);

}  // namespace fabric::checkpoint
