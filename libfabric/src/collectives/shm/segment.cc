#include "collectives/shm/segment.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <random>
#include <stdexcept>
#include <utility>

namespace fabric::collectives::shm {
namespace {

std::string errno_text() { return std::strerror(errno); }

std::string namespace_inode(const char* kind) {
  struct stat info {};
  const std::string path = std::string("/proc/self/ns/") + kind;
  return ::stat(path.c_str(), &info) == 0 ? std::to_string(info.st_ino) : "none";
}

std::string first_line(const char* path) {
  std::ifstream file(path);
  std::string line;
  std::getline(file, line);
  return line;
}

// Removes segments of this PID namespace whose creator died before it unlinked them.
void remove_orphans() {
  const std::string prefix = segment_prefix();
  DIR* directory = ::opendir("/dev/shm");
  if (directory == nullptr) return;
  while (const dirent* entry = ::readdir(directory)) {
    const std::string file = entry->d_name;
    if (file.rfind(prefix, 0) != 0) continue;
    const pid_t creator = static_cast<pid_t>(std::strtol(file.c_str() + prefix.size(), nullptr, 10));
    if (creator > 0 && ::kill(creator, 0) != 0 && errno == ESRCH) ::shm_unlink(("/" + file).c_str());
  }
  ::closedir(directory);
}

void* map(int descriptor, std::size_t bytes) {
  void* data = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, descriptor, 0);
  return data == MAP_FAILED ? nullptr : data;
}

}  // namespace

std::string segment_prefix() { return "fabric-shm-" + namespace_inode("pid") + "-"; }

std::string node_identity() {
  struct stat shm {};
  const std::string dev_shm =
      ::stat("/dev/shm", &shm) == 0 ? std::to_string(shm.st_dev) + ":" + std::to_string(shm.st_ino) : "none";
  char host[256] = {};
  ::gethostname(host, sizeof(host) - 1);
  return first_line("/proc/sys/kernel/random/boot_id") + "/" + host + "/" + dev_shm + "/ipc:" +
         namespace_inode("ipc") + "/pid:" + namespace_inode("pid");
}

SharedSegment SharedSegment::create(std::size_t bytes) {
  remove_orphans();
  std::random_device entropy;
  const std::string name = segment_prefix() + std::to_string(::getpid()) + "-" + std::to_string(entropy()) +
                           std::to_string(entropy());
  const std::string path = "/" + name;
  const int descriptor = ::shm_open(path.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  if (descriptor < 0) throw std::runtime_error("shm_open(" + path + ") failed: " + errno_text());
  // posix_fallocate backs every page now: a /dev/shm too small fails here, not as SIGBUS.
  const int allocated = ::posix_fallocate(descriptor, 0, static_cast<off_t>(bytes));
  void* data = allocated == 0 ? map(descriptor, bytes) : nullptr;
  const std::string why = allocated != 0 ? std::string("cannot reserve ") + std::to_string(bytes) + " bytes in /dev/shm: " +
                                               std::strerror(allocated)
                                         : "mmap failed: " + errno_text();
  ::close(descriptor);
  if (data == nullptr) {
    ::shm_unlink(path.c_str());
    throw std::runtime_error("shared-memory segment " + path + ": " + why);
  }
  std::memset(data, 0, bytes);
  return SharedSegment(name, data, bytes, /*owns_name=*/true);
}

SharedSegment SharedSegment::open(const std::string& name, std::size_t bytes) {
  const std::string path = "/" + name;
  const int descriptor = ::shm_open(path.c_str(), O_RDWR, 0);
  if (descriptor < 0) throw std::runtime_error("shm_open(" + path + ") failed: " + errno_text());
  struct stat info {};
  if (::fstat(descriptor, &info) != 0 || static_cast<std::size_t>(info.st_size) < bytes) {
    ::close(descriptor);
    throw std::runtime_error("shared-memory segment " + path + " holds " + std::to_string(info.st_size) +
                             " bytes, expected " + std::to_string(bytes));
  }
  void* data = map(descriptor, bytes);
  const std::string why = errno_text();
  ::close(descriptor);
  if (data == nullptr) throw std::runtime_error("mmap of " + path + " failed: " + why);
  return SharedSegment(name, data, bytes, /*owns_name=*/false);
}

SharedSegment::SharedSegment(SharedSegment&& other) noexcept
    : name_(std::move(other.name_)),
      data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      owns_name_(std::exchange(other.owns_name_, false)) {}

SharedSegment& SharedSegment::operator=(SharedSegment&& other) noexcept {
  if (this != &other) {
    this->~SharedSegment();
    new (this) SharedSegment(std::move(other));
  }
  return *this;
}

SharedSegment::~SharedSegment() {
  unlink();
  if (data_ != nullptr) ::munmap(data_, size_);
}

void SharedSegment::unlink() {
  if (!owns_name_) return;
  ::shm_unlink(("/" + name_).c_str());
  owns_name_ = false;
}

}  // namespace fabric::collectives::shm
