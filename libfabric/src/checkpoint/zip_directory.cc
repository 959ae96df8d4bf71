#include "checkpoint/zip_directory.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "fabric/errors.h"

namespace fabric::checkpoint {
namespace {

constexpr std::uint32_t kEndOfCentralDirectory = 0x06054b50;
constexpr std::uint32_t kZip64EndLocator = 0x07064b50;
constexpr std::uint32_t kZip64End = 0x06064b50;
constexpr std::uint32_t kCentralHeader = 0x02014b50;

template <typename T>
T read_le(const unsigned char* bytes) {
  T value = 0;
  for (std::size_t i = 0; i < sizeof(T); ++i) value |= static_cast<T>(bytes[i]) << (8 * i);
  return value;
}

class File {
 public:
  explicit File(const std::string& path) : path_(path), fd_(::open(path.c_str(), O_RDONLY | O_CLOEXEC)) {
    if (fd_ < 0) throw CheckpointError("Cannot open checkpoint " + path + ": " + std::strerror(errno) + ".");
    struct stat info {};
    ::fstat(fd_, &info);
    size_ = static_cast<std::uint64_t>(info.st_size);
  }
  ~File() { ::close(fd_); }
  File(const File&) = delete;
  File& operator=(const File&) = delete;

  std::vector<unsigned char> read(std::uint64_t offset, std::uint64_t length) const {
    if (offset + length > size_) corrupt("a zip structure points past the end of the file");
    std::vector<unsigned char> bytes(length);
    if (::pread(fd_, bytes.data(), length, static_cast<off_t>(offset)) != static_cast<ssize_t>(length)) {
      corrupt("reading it failed");
    }
    return bytes;
  }
  std::uint64_t size() const { return size_; }
  [[noreturn]] void corrupt(const std::string& why) const {
    throw CheckpointError("Checkpoint " + path_ + " is truncated or corrupt (" + why +
                          "). Load an earlier checkpoint or save this one again.");
  }

 private:
  std::string path_;
  int fd_;
  std::uint64_t size_ = 0;
};

}  // namespace

std::map<std::string, std::uint32_t> read_zip_crcs(const std::string& path) {
  File file(path);
  // The end-of-central-directory record is the last 22 bytes plus a comment of up to 64 KiB.
  const std::uint64_t tail_length = std::min<std::uint64_t>(file.size(), 22 + 65535);
  const auto tail = file.read(file.size() - tail_length, tail_length);
  std::int64_t eocd = -1;
  for (std::int64_t i = static_cast<std::int64_t>(tail_length) - 22; i >= 0; --i) {
    if (read_le<std::uint32_t>(&tail[i]) == kEndOfCentralDirectory) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) file.corrupt("no zip end-of-central-directory record; not a torch.save/fabric.save file?");
  std::uint64_t entries = read_le<std::uint16_t>(&tail[eocd + 10]);
  std::uint64_t directory_offset = read_le<std::uint32_t>(&tail[eocd + 16]);
  if (directory_offset == 0xFFFFFFFFu || entries == 0xFFFFu) {  // zip64
    const std::uint64_t locator = file.size() - tail_length + static_cast<std::uint64_t>(eocd) - 20;
    const auto locator_bytes = file.read(locator, 20);
    if (read_le<std::uint32_t>(locator_bytes.data()) != kZip64EndLocator) file.corrupt("bad zip64 locator");
    const auto end64 = file.read(read_le<std::uint64_t>(&locator_bytes[8]), 56);
    if (read_le<std::uint32_t>(end64.data()) != kZip64End) file.corrupt("bad zip64 directory record");
    entries = read_le<std::uint64_t>(&end64[32]);
    directory_offset = read_le<std::uint64_t>(&end64[48]);
  }
  std::map<std::string, std::uint32_t> crcs;
  std::uint64_t offset = directory_offset;
  for (std::uint64_t i = 0; i < entries; ++i) {
    const auto header = file.read(offset, 46);
    if (read_le<std::uint32_t>(header.data()) != kCentralHeader) file.corrupt("bad central directory entry");
    const auto name_length = read_le<std::uint16_t>(&header[28]);
    const auto extra_length = read_le<std::uint16_t>(&header[30]);
    const auto comment_length = read_le<std::uint16_t>(&header[32]);
    const auto name = file.read(offset + 46, name_length);
    crcs[std::string(name.begin(), name.end())] = read_le<std::uint32_t>(&header[16]);
    offset += 46u + name_length + extra_length + comment_length;
  }
  return crcs;
}

}  // namespace fabric::checkpoint
