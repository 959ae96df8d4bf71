// A zip archive's central directory (zip64 included) and positioned reads of its members.
// LibTorch's PyTorchStreamReader does not check members' CRC-32 when it reads them, so a
// flipped byte inside a tensor would load silently; the checkpoint reader reads stored
// members itself through this, on several threads, and checks every byte. Torch-free.
#pragma once

#include <cstdint>
#include <map>
#include <string>

namespace fabric::checkpoint {

struct ZipEntry {
  std::uint32_t crc = 0;
  std::uint64_t size = 0;             // uncompressed
  std::uint64_t compressed_size = 0;  // = size when stored
  std::uint16_t method = 0;           // 0: stored, as torch.save writes every member
  std::uint64_t header_offset = 0;    // of its local header
};

class ZipArchive {
 public:
  // Throws CheckpointError if `path` cannot be opened or does not end in a well-formed
  // central directory.
  explicit ZipArchive(const std::string& path);
  ~ZipArchive();
  ZipArchive(const ZipArchive&) = delete;
  ZipArchive& operator=(const ZipArchive&) = delete;

  const std::map<std::string, ZipEntry>& entries() const { return entries_; }
  // Where the member's bytes begin, after its local header.
  std::uint64_t data_offset(const ZipEntry& entry) const;
  // `length` bytes at `offset` into `into`; safe from several threads at once.
  void read(std::uint64_t offset, std::uint64_t length, void* into) const;
  // CheckpointError unless the file holds `length` bytes at `offset`.
  void require_within(std::uint64_t offset, std::uint64_t length) const;
  [[noreturn]] void corrupt(const std::string& why) const;

 private:
  void read_directory();

  std::string path_;
  int fd_ = -1;
  std::uint64_t size_ = 0;
  std::map<std::string, ZipEntry> entries_;
};

}  // namespace fabric::checkpoint
