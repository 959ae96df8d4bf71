// A POSIX shared-memory segment (shm_open + mmap) that the ranks of one node map, and what
// says whether two processes can share one. The creator removes the segment's name
// (`unlink`) as soon as every rank has mapped it, so a crash afterwards leaks nothing: the
// memory goes when the last mapping does. A creator killed before that leaves a name
// behind; the next creator in the same PID namespace removes names whose creator is dead.
#pragma once

#include <cstddef>
#include <string>
#include <utility>

namespace fabric::collectives::shm {

class SharedSegment {
 public:
  // A new segment of `bytes` bytes with a unique name, backed by memory now (so a full
  // /dev/shm is an error here, never a SIGBUS later). std::runtime_error on failure.
  static SharedSegment create(std::size_t bytes);
  // Maps the segment another rank created. std::runtime_error if it is gone or smaller.
  static SharedSegment open(const std::string& name, std::size_t bytes);

  SharedSegment(SharedSegment&& other) noexcept;
  SharedSegment& operator=(SharedSegment&& other) noexcept;
  SharedSegment(const SharedSegment&) = delete;
  SharedSegment& operator=(const SharedSegment&) = delete;
  ~SharedSegment();  // unmaps; the creator also unlinks, if it has not yet

  // Removes the name (creator only): no other process can map it after this.
  void unlink();

  const std::string& name() const { return name_; }
  void* data() const { return data_; }
  std::size_t size() const { return size_; }

 private:
  SharedSegment(std::string name, void* data, std::size_t size, bool owns_name)
      : name_(std::move(name)), data_(data), size_(size), owns_name_(owns_name) {}

  std::string name_;
  void* data_ = nullptr;
  std::size_t size_ = 0;
  bool owns_name_ = false;
};

// Names the memory a process shares through /dev/shm: boot, host name, the /dev/shm file
// system and the IPC and PID namespaces. Processes with equal identities map the same
// segments and can see each other's PIDs.
std::string node_identity();

// The prefix of every segment name this process creates ("fabric-shm-<pid namespace>-"):
// what the tests look for under /dev/shm.
std::string segment_prefix();

}  // namespace fabric::collectives::shm
