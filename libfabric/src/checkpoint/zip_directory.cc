#include "checkpoint/zip_directory.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "fabric/errors.h"

namespace fabric::checkpoint {
namespace {

constexpr std::uint32_t kEndOfCentralDirectory = 0x06054b50;
constexpr std::uint32_t kZip64EndLocator = 0x07064b50;
constexpr std::uint32_t kZip64End = 0x06064b50;
constexpr std::uint32_t kCentralHeader = 0x02014b50;
constexpr std::uint32_t kLocalHeader = 0x04034b50;
constexpr std::uint16_t kZip64ExtraTag = 0x0001;
constexpr std::uint32_t kInZip64 = 0xFFFFFFFFu;  // a 32-bit field whose value is in the zip64 extra

template <typename T>
T read_le(const unsigned char* bytes) {
  T value = 0;
  for (std::size_t i = 0; i < sizeof(T); ++i) value |= static_cast<T>(bytes[i]) << (8 * i);
  return value;
}

}  // namespace

ZipArchive::ZipArchive(const std::string& path) : path_(path), fd_(::open(path.c_str(), O_RDONLY | O_CLOEXEC)) {
  if (fd_ < 0) throw CheckpointError("Cannot open checkpoint " + path + ": " + std::strerror(errno) + ".");
  struct stat info {};
  if (::fstat(fd_, &info) != 0) {
    const int error = errno;
    ::close(fd_);
    throw CheckpointError("Cannot read checkpoint " + path + ": " + std::strerror(error) + ".");
  }
  size_ = static_cast<std::uint64_t>(info.st_size);
  try {
    read_directory();
  } catch (...) {
    ::close(fd_);
    throw;
  }
}

ZipArchive::~ZipArchive() { ::close(fd_); }

void ZipArchive::require_within(std::uint64_t offset, std::uint64_t length) const {
  if (offset > size_ || length > size_ - offset) corrupt("a zip structure points past the end of the file");
}

void ZipArchive::read(std::uint64_t offset, std::uint64_t length, void* into) const {
  require_within(offset, length);
  auto* bytes = static_cast<unsigned char*>(into);
  while (length > 0) {
    const ssize_t got = ::pread(fd_, bytes, length, static_cast<off_t>(offset));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) corrupt(got < 0 ? std::string("reading it failed: ") + std::strerror(errno) : "it ended early");
    bytes += got;
    offset += static_cast<std::uint64_t>(got);
    length -= static_cast<std::uint64_t>(got);
  }
}

void ZipArchive::corrupt(const std::string& why) const {
  throw CheckpointError("Checkpoint " + path_ + " is truncated or corrupt (" + why +
                        "). Load an earlier checkpoint or save this one again.");
}

std::uint64_t ZipArchive::data_offset(const ZipEntry& entry) const {
  unsigned char header[30];
  read(entry.header_offset, sizeof(header), header);
  if (read_le<std::uint32_t>(header) != kLocalHeader) corrupt("bad local header");
  return entry.header_offset + sizeof(header) + read_le<std::uint16_t>(&header[26]) +
         read_le<std::uint16_t>(&header[28]);
}

void ZipArchive::read_directory() {
  const auto read_vector = [&](std::uint64_t offset, std::uint64_t length) {
    std::vector<unsigned char> bytes(length);
    read(offset, length, bytes.data());
    return bytes;
  };
  // The end-of-central-directory record is the last 22 bytes plus a comment of up to 64 KiB.
  const std::uint64_t tail_length = std::min<std::uint64_t>(size_, 22 + 65535);
  const auto tail = read_vector(size_ - tail_length, tail_length);
  std::int64_t eocd = -1;
  for (std::int64_t i = static_cast<std::int64_t>(tail_length) - 22; i >= 0; --i) {
    if (read_le<std::uint32_t>(&tail[i]) == kEndOfCentralDirectory) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) corrupt("no zip end-of-central-directory record; not a torch.save/fabric.save file?");
  std::uint64_t count = read_le<std::uint16_t>(&tail[eocd + 10]);
  std::uint64_t directory_offset = read_le<std::uint32_t>(&tail[eocd + 16]);
  if (directory_offset == kInZip64 || count == 0xFFFFu) {
    const std::uint64_t locator = size_ - tail_length + static_cast<std::uint64_t>(eocd) - 20;
    const auto locator_bytes = read_vector(locator, 20);
    if (read_le<std::uint32_t>(locator_bytes.data()) != kZip64EndLocator) corrupt("bad zip64 locator");
    const auto end64 = read_vector(read_le<std::uint64_t>(&locator_bytes[8]), 56);
    if (read_le<std::uint32_t>(end64.data()) != kZip64End) corrupt("bad zip64 directory record");
    count = read_le<std::uint64_t>(&end64[32]);
    directory_offset = read_le<std::uint64_t>(&end64[48]);
  }
  std::uint64_t offset = directory_offset;
  for (std::uint64_t i = 0; i < count; ++i) {
    const auto header = read_vector(offset, 46);
    if (read_le<std::uint32_t>(header.data()) != kCentralHeader) corrupt("bad central directory entry");
    const auto name_length = read_le<std::uint16_t>(&header[28]);
    const auto extra_length = read_le<std::uint16_t>(&header[30]);
    const auto comment_length = read_le<std::uint16_t>(&header[32]);
    const auto name = read_vector(offset + 46, name_length);
    ZipEntry entry{.crc = read_le<std::uint32_t>(&header[16]),
                   .size = read_le<std::uint32_t>(&header[24]),
                   .compressed_size = read_le<std::uint32_t>(&header[20]),
                   .method = read_le<std::uint16_t>(&header[10]),
                   .header_offset = read_le<std::uint32_t>(&header[42])};
    // Fields too large for 32 bits are in the zip64 extra, in this order, those only.
    const auto extra = read_vector(offset + 46 + name_length, extra_length);
    for (std::size_t at = 0; at + 4 <= extra.size();) {
      const auto tag = read_le<std::uint16_t>(&extra[at]);
      const auto length = read_le<std::uint16_t>(&extra[at + 2]);
      if (at + 4 + length > extra.size()) corrupt("a zip extra field overruns its entry");
      if (tag == kZip64ExtraTag) {
        std::size_t field = at + 4;
        for (std::uint64_t* value : {&entry.size, &entry.compressed_size, &entry.header_offset}) {
          if (*value != kInZip64) continue;
          if (field + 8 > at + 4 + length) corrupt("a zip64 extra field is too short");
          *value = read_le<std::uint64_t>(&extra[field]);
          field += 8;
        }
      }
      at += 4 + length;
    }
    entries_[std::string(name.begin(), name.end())] = entry;
    offset += 46u + name_length + extra_length + comment_length;
  }
}

}  // namespace fabric::checkpoint
