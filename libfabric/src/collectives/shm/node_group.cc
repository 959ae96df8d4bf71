#include "collectives/shm/node_group.h"

#include <poll.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <new>
#include <thread>

namespace fabric::collectives::shm {
namespace {

using Clock = std::chrono::steady_clock;

constexpr std::uint64_t kMagic = 0x6661627269632d31;  // "fabric-1"
constexpr std::size_t kLine = 64;                     // one cache line per rank's counter
constexpr std::size_t kHeaderBytes = 4096;            // header and counters; buffers start page-aligned
constexpr int kSpins = 2000;                          // busy polls before the first yield
constexpr auto kYieldFor = std::chrono::milliseconds(2);  // then yield; after that, sleep
constexpr auto kSleep = std::chrono::microseconds(50);

struct Header {
  std::uint64_t magic;
  std::uint32_t size;
  std::uint32_t chunk_bytes;
  std::int32_t broken_by;  // 0 while healthy; 1 + the rank that gave up first
};

void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

int open_pidfd(int pid) {
#ifdef SYS_pidfd_open
  return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
#else
  (void)pid;
  return -1;
#endif
}

std::size_t segment_bytes(int size, std::size_t chunk_bytes) {
  return kHeaderBytes + static_cast<std::size_t>(size) * 2 * chunk_bytes;
}

// Elements [begin, end) of `count` that rank `rank` of `size` reduces: equal slices of a
// multiple of 16 elements (whole vectors), the last ones possibly shorter or empty.
std::pair<std::size_t, std::size_t> slice(std::size_t count, int rank, int size) {
  const std::size_t per_rank = ((count + size - 1) / size + 15) / 16 * 16;
  const std::size_t begin = std::min(count, per_rank * static_cast<std::size_t>(rank));
  return {begin, std::min(count, begin + per_rank)};
}

}  // namespace

struct alignas(kLine) NodeGroup::Control {
  std::uint64_t sequence;  // the steps this rank has published (atomic_ref'd)
};
static_assert(sizeof(Header) <= kLine);
// Counters and the broken flag are shared between processes: only lock-free atomics are.
static_assert(std::atomic_ref<std::uint64_t>::is_always_lock_free && std::atomic_ref<std::int32_t>::is_always_lock_free);

std::unique_ptr<NodeGroup> NodeGroup::join(Rendezvous& rendezvous, int rank, int size, NodeGroupOptions options) {
  if (options.chunk_bytes == 0 || options.chunk_bytes % kLine != 0 || options.chunk_bytes > UINT32_MAX) {
    throw std::invalid_argument("NodeGroupOptions::chunk_bytes must be a positive multiple of 64 below 4 GiB, not " +
                                std::to_string(options.chunk_bytes));
  }
  if (size < 2 || 64 + static_cast<std::size_t>(size) * kLine > kHeaderBytes) return nullptr;

  const std::size_t bytes = segment_bytes(size, options.chunk_bytes);
  std::unique_ptr<SharedSegment> segment;
  std::string status;
  try {
    if (rank == 0) {
      segment = std::make_unique<SharedSegment>(SharedSegment::create(bytes));
      auto* header = static_cast<Header*>(segment->data());
      *header = Header{.magic = kMagic, .size = static_cast<std::uint32_t>(size),
                       .chunk_bytes = static_cast<std::uint32_t>(options.chunk_bytes), .broken_by = 0};
      rendezvous.set("segment", segment->name());
    } else {
      const std::string name = rendezvous.get("segment");
      if (name.empty()) throw std::runtime_error("rank 0 could not create the segment");
      segment = std::make_unique<SharedSegment>(SharedSegment::open(name, bytes));
      const auto* header = static_cast<const Header*>(segment->data());
      if (header->magic != kMagic || header->size != static_cast<std::uint32_t>(size) ||
          header->chunk_bytes != static_cast<std::uint32_t>(options.chunk_bytes)) {
        throw std::runtime_error("segment " + name + " is not this group's");
      }
    }
    status = "ok " + std::to_string(::getpid());
  } catch (const std::runtime_error& error) {
    if (rank == 0) rendezvous.set("segment", "");
    status = std::string("failed: ") + error.what();
  }
  rendezvous.set("mapped/" + std::to_string(rank), status);

  std::vector<int> pids(static_cast<std::size_t>(size), 0);
  bool all_mapped = true;
  for (int r = 0; r < size; ++r) {
    const std::string peer = rendezvous.get("mapped/" + std::to_string(r));
    all_mapped = all_mapped && peer.rfind("ok ", 0) == 0;
    if (all_mapped) pids[static_cast<std::size_t>(r)] = std::stoi(peer.substr(3));
  }
  if (rank == 0 && segment) segment->unlink();  // everyone has it mapped (or gave up): nothing to leak
  if (!all_mapped) return nullptr;

  std::vector<int> pidfds(static_cast<std::size_t>(size), -1);
  for (int r = 0; r < size; ++r) {
    if (r != rank) pidfds[static_cast<std::size_t>(r)] = open_pidfd(pids[static_cast<std::size_t>(r)]);
  }
  return std::unique_ptr<NodeGroup>(
      new NodeGroup(std::move(*segment), rank, size, options, std::move(pidfds), std::move(pids)));
}

NodeGroup::NodeGroup(SharedSegment segment, int rank, int size, NodeGroupOptions options,
                     std::vector<int> peer_pidfds, std::vector<int> peer_pids)
    : segment_(std::move(segment)),
      rank_(rank),
      size_(size),
      options_(options),
      peer_pidfds_(std::move(peer_pidfds)),
      peer_pids_(std::move(peer_pids)) {}

NodeGroup::~NodeGroup() {
  for (int descriptor : peer_pidfds_) {
    if (descriptor >= 0) ::close(descriptor);
  }
}

NodeGroup::Control& NodeGroup::control(int rank) const {
  return *reinterpret_cast<Control*>(static_cast<std::byte*>(segment_.data()) + kLine * (1 + rank));
}

std::byte* NodeGroup::buffer(int rank, int turn) const {
  return static_cast<std::byte*>(segment_.data()) + kHeaderBytes +
         (static_cast<std::size_t>(rank) * 2 + static_cast<std::size_t>(turn)) * options_.chunk_bytes;
}

void NodeGroup::check_usable(const char* operation) {
  if (broken_) {
    throw NodeGroupError(std::string(operation) + ": the shared-memory group failed in an earlier operation and "
                         "cannot be used again");
  }
  if (auto why = peers_gave_up(operation)) fail(*why);
}

// Another rank marked the group broken: this one fails too, instead of waiting it out.
std::optional<std::string> NodeGroup::peers_gave_up(const char* operation) const {
  const std::int32_t broken_by = std::atomic_ref<std::int32_t>(static_cast<Header*>(segment_.data())->broken_by).load();
  if (broken_by == 0) return std::nullopt;
  return where(operation) + "rank " + std::to_string(name_of(broken_by - 1)) +
         " gave up on the group (its own error says why)";
}

// Why waiting on `peer` is pointless, if it is: the group is broken, the peer has exited,
// or the timeout has passed.
std::optional<std::string> NodeGroup::hopeless(int peer, Clock::time_point deadline, const char* operation) const {
  if (auto why = peers_gave_up(operation)) return why;
  pollfd exited{.fd = peer_pidfds_[static_cast<std::size_t>(peer)], .events = POLLIN, .revents = 0};
  if (exited.fd >= 0 && ::poll(&exited, 1, 0) > 0) {
    return where(operation) + "rank " + std::to_string(name_of(peer)) + " (pid " +
           std::to_string(peer_pids_[static_cast<std::size_t>(peer)]) + ") exited";
  }
  if (Clock::now() >= deadline) {
    return where(operation) + "timed out after " + std::to_string(options_.timeout.count()) +
           " ms waiting for rank " + std::to_string(name_of(peer));
  }
  return std::nullopt;
}

int NodeGroup::name_of(int rank) const {
  return options_.rank_names.empty() ? rank : options_.rank_names[static_cast<std::size_t>(rank)];
}

std::string NodeGroup::where(const char* operation) const {
  std::string ranks;
  for (int r = 0; r < size_; ++r) ranks += (r ? ", " : "") + std::to_string(name_of(r));
  return std::string(operation) + " on rank " + std::to_string(name_of(rank_)) + " (shared memory with ranks " + ranks +
         "): ";
}

void NodeGroup::abandon() {
  broken_ = true;
  std::int32_t healthy = 0;
  std::atomic_ref<std::int32_t>(static_cast<Header*>(segment_.data())->broken_by)
      .compare_exchange_strong(healthy, rank_ + 1);
}

void NodeGroup::fail(const std::string& why) {
  abandon();
  throw NodeGroupError(why);
}

void NodeGroup::step(const char* operation) {
  ++sequence_;
  std::atomic_ref<std::uint64_t>(control(rank_).sequence).store(sequence_, std::memory_order_release);
  for (int peer = 0; peer < size_; ++peer) {
    if (peer != rank_) wait_for(peer, sequence_, operation);
  }
}

void NodeGroup::wait_for(int peer, std::uint64_t target, const char* operation) {
  std::atomic_ref<std::uint64_t> sequence(control(peer).sequence);
  for (int spin = 0; spin < kSpins; ++spin) {
    if (sequence.load(std::memory_order_acquire) >= target) return;
    cpu_relax();
  }
  const auto start = Clock::now();
  const auto deadline = start + options_.timeout;
  for (unsigned round = 1;; ++round) {
    if (sequence.load(std::memory_order_acquire) >= target) return;
    if (round % 16 == 0) {
      // The peer may have published this step just before it exited (a last barrier) or
      // before another rank broke the group: only a step still missing is a failure.
      if (auto why = hopeless(peer, deadline, operation)) {
        if (sequence.load(std::memory_order_acquire) >= target) return;
        fail(*why);
      }
    }
    // A short wait yields the core (to the peer, when ranks outnumber cores); a long one
    // (a peer still computing, or loading data) sleeps instead of burning it.
    if (Clock::now() - start < kYieldFor) {
      ::sched_yield();
    } else {
      std::this_thread::sleep_for(kSleep);
    }
  }
}

void NodeGroup::barrier() {
  check_usable("barrier");
  step("barrier");
}

void NodeGroup::all_reduce(void* data, std::size_t count, DataType type, Reduction op) {
  check_usable("all_reduce");
  const std::size_t element = element_size(type);
  const std::size_t per_chunk = options_.chunk_bytes / element;
  auto* bytes = static_cast<std::byte*>(data);
  std::vector<const void*> others(static_cast<std::size_t>(size_ - 1));
  for (std::size_t done = 0; done < count; done += per_chunk) {
    const std::size_t n = std::min(per_chunk, count - done);
    std::byte* chunk = bytes + done * element;
    std::memcpy(buffer(rank_, turn_), chunk, n * element);
    step("all_reduce");
    // Reduce-scatter: this rank reduces its slice of every rank's buffer into its own.
    const auto [begin, end] = slice(n, rank_, size_);
    if (end > begin) {
      for (int peer = 0, k = 0; peer < size_; ++peer) {
        if (peer != rank_) others[static_cast<std::size_t>(k++)] = buffer(peer, turn_) + begin * element;
      }
      accumulate(buffer(rank_, turn_) + begin * element, others.data(), size_ - 1, end - begin, type, op);
    }
    step("all_reduce");
    // All-gather: each slice from the rank that reduced it.
    for (int owner = 0; owner < size_; ++owner) {
      const auto [from, to] = slice(n, owner, size_);
      if (to > from) std::memcpy(chunk + from * element, buffer(owner, turn_) + from * element, (to - from) * element);
    }
    turn_ ^= 1;
  }
}

void NodeGroup::broadcast(void* data, std::size_t bytes, int root) {
  check_usable("broadcast");
  auto* out = static_cast<std::byte*>(data);
  for (std::size_t done = 0; done < bytes; done += options_.chunk_bytes) {
    const std::size_t n = std::min(options_.chunk_bytes, bytes - done);
    if (rank_ == root) std::memcpy(buffer(rank_, turn_), out + done, n);
    step("broadcast");
    if (rank_ != root) std::memcpy(out + done, buffer(root, turn_), n);
    turn_ ^= 1;
  }
}

void NodeGroup::all_gather(const void* input, std::size_t bytes, const std::vector<void*>& outputs) {
  check_usable("all_gather");
  const auto* in = static_cast<const std::byte*>(input);
  for (std::size_t done = 0; done < bytes; done += options_.chunk_bytes) {
    const std::size_t n = std::min(options_.chunk_bytes, bytes - done);
    std::memcpy(buffer(rank_, turn_), in + done, n);
    step("all_gather");
    for (int peer = 0; peer < size_; ++peer) {
      std::memcpy(static_cast<std::byte*>(outputs[static_cast<std::size_t>(peer)]) + done, buffer(peer, turn_), n);
    }
    turn_ ^= 1;
  }
}

}  // namespace fabric::collectives::shm
