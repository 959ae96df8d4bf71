#include "checkpoint/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <random>

#include "fabric/errors.h"

namespace fabric::checkpoint {
namespace {

[[noreturn]] void fail(const std::string& what, const std::string& path, int error) {
  throw CheckpointError("Cannot " + what + " " + path + ": " + std::strerror(error) +
                        ". Check that the folder exists, is writable and has free space.");
}

// Owns a file descriptor; a temporary file not yet committed is unlinked on destruction.
class TempFile {
 public:
  explicit TempFile(const std::string& target) {
    std::random_device random;
    path_ = target + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(random());
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd_ < 0) fail("create a temporary file next to", target, errno);
  }
  ~TempFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(path_.c_str());
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;

  bool write(const void* data, std::size_t size) {
    const char* bytes = static_cast<const char*>(data);
    while (size > 0) {
      const ssize_t written = ::write(fd_, bytes, size);
      if (written < 0 && errno == EINTR) continue;
      if (written <= 0) {
        write_error_ = written < 0 ? errno : EIO;
        return false;
      }
      bytes += written;
      size -= static_cast<std::size_t>(written);
      written_ += static_cast<std::uint64_t>(written);
    }
    start_writeback();
    return true;
  }

  // Starts the disk writing the pages written so far, every few MiB, without waiting for it:
  // the disk works while the caller checksums and writes the next records, so the fsync at
  // the end has little left to do. Advice only: the fsync is what makes the file durable.
  void start_writeback() {
    constexpr std::uint64_t kEvery = 8 << 20;
    if (written_ - started_ < kEvery) return;
    ::sync_file_range(fd_, static_cast<off_t>(started_), static_cast<off_t>(written_ - started_),
                      SYNC_FILE_RANGE_WRITE);
    started_ = written_;
  }

  void commit(const std::string& target) {
    if (write_error_ != 0) fail("write", path_, write_error_);
    if (::fsync(fd_) != 0) fail("flush", path_, errno);
    if (::close(std::exchange(fd_, -1)) != 0) fail("close", path_, errno);
    if (::rename(path_.c_str(), target.c_str()) != 0) fail("rename the temporary file to", target, errno);
    committed_ = true;
    // The rename itself must reach the disk, or a crash can bring back the old name.
    sync_directory(parent_of(target));
  }

  int write_error() const { return write_error_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int fd_ = -1;
  int write_error_ = 0;
  bool committed_ = false;
  std::uint64_t written_ = 0;  // bytes written so far
  std::uint64_t started_ = 0;  // of which the disk has been told to start writing
};

}  // namespace

std::string parent_of(const std::string& path) {
  const auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

void sync_directory(const std::string& path) {
  const int dir = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0) return;
  ::fsync(dir);
  ::close(dir);
}

void create_parent_directories(const std::string& path) {
  const std::string parent = parent_of(path);
  for (std::size_t end = 1; end <= parent.size(); ++end) {
    if (end != parent.size() && parent[end] != '/') continue;
    const std::string prefix = parent.substr(0, end);
    if (::mkdir(prefix.c_str(), 0755) != 0 && errno != EEXIST) fail("create the folder", prefix, errno);
  }
}

void write_file_atomically(const std::string& path, const std::function<void(const ByteSink&)>& write) {
  create_parent_directories(path);
  TempFile file(path);
  try {
    write([&file](const void* data, std::size_t size) { return file.write(data, size); });
  } catch (...) {
    // A failed write surfaces as the writer's own error; the system error says more.
    if (file.write_error() != 0) fail("write", file.path(), file.write_error());
    throw;
  }
  file.commit(path);
}

}  // namespace fabric::checkpoint
