// Writing a file so that a crash at any moment leaves either the old file or the complete
// new one under its name, never a partial one: write a temporary file in the same folder,
// fsync it, rename it over the target, fsync the folder. POSIX calls only (libtorch.so
// exports broken copies of several std::filesystem functions; see libfabric/README.md).
#pragma once

#include <cstddef>
#include <functional>
#include <string>

namespace fabric::checkpoint {

// Receives the bytes of the file in order; returns false if the write failed.
using ByteSink = std::function<bool(const void* data, std::size_t size)>;

// Creates the parent folders, then calls `write(sink)` to produce the content and commits it
// atomically to `path`. Throws CheckpointError naming the path and the system error.
void write_file_atomically(const std::string& path, const std::function<void(const ByteSink&)>& write);

// mkdir -p for the folder that holds `path`.
void create_parent_directories(const std::string& path);

// The folder that holds `path` ("." for a bare name).
std::string parent_of(const std::string& path);

// fsyncs a folder, so that the renames in it reach the disk (best effort: a folder that
// cannot be opened is left as it is).
void sync_directory(const std::string& path);

}  // namespace fabric::checkpoint
