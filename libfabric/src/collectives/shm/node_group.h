// Collectives between the ranks of one node through one shared-memory segment they all map
// (segment.h): all_reduce as a reduce-scatter then an all-gather, broadcast, all_gather and
// barrier, a chunk at a time. Each rank owns two chunk buffers in the segment (used in
// turn) and one sequence counter; a rank publishes a step by raising its counter (release)
// and waits for every peer's to reach the same value (acquire). Chunks are small enough to
// stay in cache between the copy in, the reduction and the copy out.
//
// Why two buffers suffice: a rank writes buffer t again only two chunks later, after it has
// passed the step that ends the chunk in between; every peer published that step only
// after it finished reading buffer t. (A barrier takes a step without touching a buffer.)
//
// It fails as Gloo does: a peer that exits is noticed at once (a pidfd per peer, where the
// kernel has pidfd_open; else at the timeout), one that hangs when the timeout expires;
// either is a NodeGroupError, the group is marked broken in the segment so every other rank
// fails its next wait too, and every later call fails.
// Torch-free. One thread per rank calls it; every rank makes the same calls in the same order.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "collectives/shm/reduce_kernels.h"
#include "collectives/shm/segment.h"

namespace fabric::collectives::shm {

class NodeGroupError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The store the ranks meet through (c10d's, in the backend): set, and a get that waits for
// the key until the store's own timeout.
class Rendezvous {
 public:
  virtual ~Rendezvous() = default;
  virtual void set(const std::string& key, const std::string& value) = 0;
  virtual std::string get(const std::string& key) = 0;
};

struct NodeGroupOptions {
  std::chrono::milliseconds timeout = std::chrono::minutes(30);  // each wait for a peer
  std::size_t chunk_bytes = 256 * 1024;  // per rank and buffer: 2 x ranks x this in all
  // What errors call each rank: its number in the caller's larger group (node_map.h), so a
  // message names the process the user knows. Empty: the ranks' own numbers.
  std::vector<int> rank_names;
};

class NodeGroup {
 public:
  // Every rank of the group calls this with the same `rendezvous`, once the caller has found
  // them on one node (node_map.h). Returns nullptr on every rank when any of them still
  // cannot map rank 0's segment (no /dev/shm, or full): the caller then uses its network
  // path. Throws when the rendezvous itself fails.
  static std::unique_ptr<NodeGroup> join(Rendezvous& rendezvous, int rank, int size, NodeGroupOptions options);
  ~NodeGroup();

  int rank() const { return rank_; }
  int size() const { return size_; }

  void barrier();
  // In place, `count` elements of `type` at `data`.
  void all_reduce(void* data, std::size_t count, DataType type, Reduction op);
  // `bytes` at `data` on every rank become rank `root`'s.
  void broadcast(void* data, std::size_t bytes, int root);
  // outputs[r] (each `bytes` long) receives rank r's `input`.
  void all_gather(const void* input, std::size_t bytes, const std::vector<void*>& outputs);

  // Marks the group broken without an error of its own: the caller failed elsewhere (its
  // link to the other nodes), and the peers waiting on it here must fail now, not at the
  // timeout. Every later call on any rank fails.
  void abandon();

 private:
  struct Control;
  NodeGroup(SharedSegment segment, int rank, int size, NodeGroupOptions options, std::vector<int> peer_pidfds,
            std::vector<int> peer_pids);

  Control& control(int rank) const;
  std::byte* buffer(int rank, int turn) const;
  // Raises this rank's counter and waits until every peer's has reached it.
  void step(const char* operation);
  void wait_for(int peer, std::uint64_t target, const char* operation);
  [[noreturn]] void fail(const std::string& why);
  void check_usable(const char* operation);
  std::optional<std::string> peers_gave_up(const char* operation) const;
  std::optional<std::string> hopeless(int peer, std::chrono::steady_clock::time_point deadline,
                                      const char* operation) const;
  int name_of(int rank) const;
  // "<operation> on rank R (shared memory with ranks A, B): " for the start of an error.
  std::string where(const char* operation) const;

  SharedSegment segment_;
  int rank_;
  int size_;
  NodeGroupOptions options_;
  std::vector<int> peer_pidfds_;  // -1 where pidfd_open is not available
  std::vector<int> peer_pids_;
  std::uint64_t sequence_ = 0;  // the steps this rank has published
  int turn_ = 0;                // which of its two buffers the next step uses
  bool broken_ = false;
};

}  // namespace fabric::collectives::shm
