// The shared-memory collectives' core, torch-free: ranks are threads of this process, each
// with its own NodeGroup on one segment, meeting through an in-memory store. What crosses a
// process boundary (pidfds, a killed peer, parity with Gloo) is in
// tests/integration/collectives.
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <bit>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "collectives/shm/node_group.h"
#include "collectives/shm/node_map.h"

namespace fabric::collectives::shm {
namespace {

class MemoryRendezvous final : public Rendezvous {
 public:
  void set(const std::string& key, const std::string& value) override {
    std::lock_guard lock(mutex_);
    values_[key] = value;
    changed_.notify_all();
  }
  std::string get(const std::string& key) override {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return values_.count(key) > 0; });
    return values_[key];
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  std::map<std::string, std::string> values_;
};

// Runs `body(group)` on `size` threads, each joined to one group; rethrows nothing: each
// body records what it saw through its own captures.
void on_ranks(int size, NodeGroupOptions options, const std::function<void(NodeGroup&)>& body) {
  MemoryRendezvous rendezvous;
  std::vector<std::thread> threads;
  for (int rank = 0; rank < size; ++rank) {
    threads.emplace_back([&, rank] {
      auto group = NodeGroup::join(rendezvous, rank, size, options);
      ASSERT_NE(group, nullptr) << "threads of one process share a node";
      body(*group);
    });
  }
  for (auto& thread : threads) thread.join();
}

// Small chunks, so that even short tensors cross several chunks and both buffers.
constexpr NodeGroupOptions kSmallChunks{.timeout = std::chrono::seconds(60), .chunk_bytes = 1024};

template <typename T>
std::vector<T> rank_data(int rank, std::size_t count) {
  std::mt19937 random(static_cast<unsigned>(1000 + rank * 7 + count));
  std::uniform_int_distribution<int> value(-50, 50);
  std::vector<T> data(count);
  for (auto& x : data) x = static_cast<T>(std::is_unsigned_v<T> ? value(random) + 50 : value(random));
  return data;
}

template <typename T>
T reduce_reference(const std::vector<std::vector<T>>& all, std::size_t i, Reduction op) {
  T result = all[0][i];
  for (std::size_t r = 1; r < all.size(); ++r) {
    const T x = all[r][i];
    switch (op) {
      case Reduction::kSum: result = static_cast<T>(result + x); break;
      case Reduction::kProduct: result = static_cast<T>(result * x); break;
      case Reduction::kMin: result = std::min(result, x); break;
      case Reduction::kMax: result = std::max(result, x); break;
    }
  }
  return result;
}

template <typename T>
void expect_all_reduce_exact(DataType type, int size, std::size_t count, Reduction op) {
  std::vector<std::vector<T>> inputs;
  for (int r = 0; r < size; ++r) inputs.push_back(rank_data<T>(r, count));
  std::vector<std::vector<T>> results(static_cast<std::size_t>(size));
  on_ranks(size, kSmallChunks, [&](NodeGroup& group) {
    std::vector<T> data = inputs[static_cast<std::size_t>(group.rank())];
    group.all_reduce(data.data(), count, type, op);
    results[static_cast<std::size_t>(group.rank())] = data;
  });
  for (int r = 0; r < size; ++r) {
    for (std::size_t i = 0; i < count; ++i) {
      ASSERT_EQ(results[static_cast<std::size_t>(r)][i], reduce_reference(inputs, i, op))
          << name(type) << " rank " << r << " element " << i << " of " << count;
    }
  }
}

// Integer-valued data: every order of summation gives the same exact result.
TEST(NodeGroup, AllReduceIsExactForEveryNativeTypeOpAndOddSize) {
  for (std::size_t count : {1, 7, 255, 1000, 4099}) {
    for (Reduction op : {Reduction::kSum, Reduction::kProduct, Reduction::kMin, Reduction::kMax}) {
      expect_all_reduce_exact<float>(DataType::kFloat32, 3, count, op);
      expect_all_reduce_exact<double>(DataType::kFloat64, 2, count, op);
      expect_all_reduce_exact<std::int8_t>(DataType::kInt8, 3, count, op);
      expect_all_reduce_exact<std::uint8_t>(DataType::kUInt8, 2, count, op);
      expect_all_reduce_exact<std::int32_t>(DataType::kInt32, 4, count, op);
      expect_all_reduce_exact<std::int64_t>(DataType::kInt64, 3, count, op);
    }
  }
}

TEST(NodeGroup, AllReduceOfRandomFloatsIsWithinRoundingOfADoubleSum) {
  constexpr int kSize = 3;
  constexpr std::size_t kCount = 10007;
  std::vector<std::vector<float>> inputs(kSize, std::vector<float>(kCount));
  std::mt19937 random(5);
  std::normal_distribution<float> normal;
  for (auto& input : inputs) {
    for (auto& x : input) x = normal(random);
  }
  std::vector<float> result;
  on_ranks(kSize, kSmallChunks, [&](NodeGroup& group) {
    std::vector<float> data = inputs[static_cast<std::size_t>(group.rank())];
    group.all_reduce(data.data(), kCount, DataType::kFloat32, Reduction::kSum);
    if (group.rank() == 1) result = data;
  });
  for (std::size_t i = 0; i < kCount; ++i) {
    const double exact = static_cast<double>(inputs[0][i]) + inputs[1][i] + inputs[2][i];
    ASSERT_NEAR(result[i], exact, 4e-7 * (std::abs(inputs[0][i]) + std::abs(inputs[1][i]) + std::abs(inputs[2][i])))
        << i;
  }
}

// 16-bit floats are summed in float and rounded once, to nearest even.
TEST(NodeGroup, SixteenBitFloatsRoundOnceToNearestEven) {
  struct Case {
    DataType type;
    std::uint16_t a, b, sum;
    const char* what;
  };
  const std::vector<Case> cases = {
      {DataType::kBFloat16, 0x3f80, 0x3b80, 0x3f80, "1 + 2^-8: a tie, to the even 1"},
      {DataType::kBFloat16, 0x3f81, 0x3b80, 0x3f82, "(1 + 2^-7) + 2^-8: a tie, to the even neighbour above"},
      {DataType::kBFloat16, 0x7f7f, 0x7f7f, 0x7f80, "largest + largest: infinity"},
      {DataType::kFloat16, 0x3c00, 0x1000, 0x3c00, "1 + 2^-11: a tie, to the even 1"},
      {DataType::kFloat16, 0x3c01, 0x1000, 0x3c02, "(1 + 2^-10) + 2^-11: to the even neighbour above"},
      {DataType::kFloat16, 0x0001, 0x0001, 0x0002, "subnormal + subnormal"},
      {DataType::kFloat16, 0x7bff, 0x7bff, 0x7c00, "65504 + 65504: infinity"},
      {DataType::kFloat16, 0xc000, 0x3c00, 0xbc00, "-2 + 1 = -1"},
  };
  for (const auto& c : cases) {
    std::uint16_t out = c.a;
    const void* other = &c.b;
    accumulate(&out, &other, 1, 1, c.type, Reduction::kSum);
    EXPECT_EQ(out, c.sum) << name(c.type) << ": " << c.what;
  }
  // Three bfloat16 ones and 2^-8 three times: 16-bit pairwise sums would round each 2^-8
  // away (1 + 2^-8 is a tie to 1); one rounding keeps 3 x 2^-8 = 1.5 bfloat16 ulps.
  std::uint16_t out = 0x3f80;  // 1
  const std::uint16_t small = 0x3b80;  // 2^-8
  const void* others[] = {&small, &small, &small};
  accumulate(&out, others, 3, 1, DataType::kBFloat16, Reduction::kSum);
  EXPECT_EQ(out, 0x3f82) << "1 + 3 x 2^-8 = 1.01171875, nearest bfloat16 1.015625";
}

TEST(NodeGroup, BroadcastAndAllGatherCarryOddSizesAcrossChunks) {
  constexpr int kSize = 3;
  for (std::size_t bytes : {1, 1023, 1024, 1025, 5000}) {
    std::vector<std::vector<std::uint8_t>> broadcast(kSize), gathered(kSize);
    on_ranks(kSize, kSmallChunks, [&](NodeGroup& group) {
      std::vector<std::uint8_t> data(bytes, static_cast<std::uint8_t>(group.rank()));
      for (std::size_t i = 0; i < bytes; ++i) data[i] = static_cast<std::uint8_t>(group.rank() * 31 + i);
      std::vector<std::uint8_t> copy = data;
      group.broadcast(copy.data(), bytes, 2);
      std::vector<std::uint8_t> all(bytes * kSize);
      std::vector<void*> outputs;
      for (int r = 0; r < kSize; ++r) outputs.push_back(all.data() + r * bytes);
      group.all_gather(data.data(), bytes, outputs);
      broadcast[static_cast<std::size_t>(group.rank())] = copy;
      gathered[static_cast<std::size_t>(group.rank())] = all;
    });
    for (int r = 0; r < kSize; ++r) {
      for (std::size_t i = 0; i < bytes; ++i) {
        ASSERT_EQ(broadcast[static_cast<std::size_t>(r)][i], static_cast<std::uint8_t>(2 * 31 + i)) << bytes;
        for (int from = 0; from < kSize; ++from) {
          ASSERT_EQ(gathered[static_cast<std::size_t>(r)][from * bytes + i], static_cast<std::uint8_t>(from * 31 + i))
              << "rank " << r << " piece of " << from << " byte " << i << " of " << bytes;
        }
      }
    }
  }
}

TEST(NodeGroup, ManyOperationsInARowStayInStep) {
  // Mixed operations reuse the two buffers in turn; any reuse before every peer has read
  // would show as a wrong sum.
  on_ranks(4, kSmallChunks, [&](NodeGroup& group) {
    for (int round = 0; round < 200; ++round) {
      std::vector<std::int64_t> data(300, group.rank() + round);
      group.all_reduce(data.data(), data.size(), DataType::kInt64, Reduction::kSum);
      ASSERT_EQ(data[299], 6 + 4 * round) << "round " << round;
      std::int64_t value = group.rank() == round % 4 ? round : -1;
      group.broadcast(&value, sizeof(value), round % 4);
      ASSERT_EQ(value, round);
      if (round % 10 == 0) group.barrier();
    }
  });
}

TEST(NodeGroup, APeerThatNeverArrives_IsATimeoutNamingIt_AndBreaksTheGroup) {
  MemoryRendezvous rendezvous;
  std::unique_ptr<NodeGroup> silent;
  std::thread peer([&] { silent = NodeGroup::join(rendezvous, 1, 2, {.timeout = std::chrono::milliseconds(200)}); });
  auto group = NodeGroup::join(rendezvous, 0, 2, {.timeout = std::chrono::milliseconds(200)});
  peer.join();
  ASSERT_NE(group, nullptr);
  std::int32_t value = 1;
  try {
    group->all_reduce(&value, 1, DataType::kInt32, Reduction::kSum);
    FAIL() << "all_reduce without its peer returned";
  } catch (const NodeGroupError& error) {
    EXPECT_STREQ(error.what(), "all_reduce on rank 0 (shared memory with ranks 0, 1): timed out after 200 ms waiting for rank 1");
  }
  // The peer, arriving late, finds the group broken instead of waiting out its own timeout.
  try {
    silent->barrier();
    FAIL() << "the peer's barrier returned";
  } catch (const NodeGroupError& error) {
    EXPECT_STREQ(error.what(), "barrier on rank 1 (shared memory with ranks 0, 1): rank 0 gave up on the group (its own "
                               "error says why)");
  }
  EXPECT_THROW(group->barrier(), NodeGroupError) << "a broken group stays broken";
}

std::vector<std::string> segments_named(const std::string& prefix) {
  std::vector<std::string> names;
  if (DIR* directory = ::opendir("/dev/shm")) {
    while (const dirent* entry = ::readdir(directory)) {
      if (std::string(entry->d_name).rfind(prefix, 0) == 0) names.emplace_back(entry->d_name);
    }
    ::closedir(directory);
  }
  return names;
}

TEST(NodeGroup, AbandoningIt_FailsThePeersWaitingOnIt) {
  std::vector<std::string> errors(2);
  on_ranks(2, kSmallChunks, [&](NodeGroup& group) {
    if (group.rank() == 0) {
      group.abandon();  // as a leader does whose link to the other nodes failed
      return;
    }
    try {
      group.barrier();
    } catch (const NodeGroupError& error) {
      errors[1] = error.what();
    }
  });
  EXPECT_NE(errors[1].find("rank 0 gave up on the group"), std::string::npos) << errors[1];
}

TEST(NodeGroup, AChunkSizeTheBuffersCannotHold_IsRefusedNamingTheRule) {
  MemoryRendezvous rendezvous;
  for (const std::size_t chunk : {std::size_t{0}, std::size_t{100}, std::size_t{1} << 33}) {
    try {
      NodeGroup::join(rendezvous, 0, 2, {.timeout = std::chrono::seconds(1), .chunk_bytes = chunk});
      FAIL() << chunk << " was accepted";
    } catch (const std::invalid_argument& error) {
      EXPECT_NE(std::string(error.what()).find("positive multiple of 64 below 4 GiB"), std::string::npos) << error.what();
    }
  }
}

// Ranks as threads again, but each says which node it is on.
NodeMap map_of(const std::vector<std::string>& identities, int rank_asking) {
  MemoryRendezvous rendezvous;
  const int size = static_cast<int>(identities.size());
  for (int r = 0; r < size; ++r) {
    if (r != rank_asking) rendezvous.set("identity/" + std::to_string(r), identities[static_cast<std::size_t>(r)]);
  }
  return NodeMap::exchange(rendezvous, rank_asking, size, identities[static_cast<std::size_t>(rank_asking)]);
}

TEST(NodeMap, NumbersNodesByTheirLowestRank_WhichLeadsThem) {
  const std::vector<std::string> identities{"b", "a", "b", "c", "a"};
  for (int asking = 0; asking < 5; ++asking) {
    const NodeMap map = map_of(identities, asking);
    EXPECT_EQ(map.node_of, (std::vector<int>{0, 1, 0, 2, 1})) << "the same map on rank " << asking;
    EXPECT_EQ(map.ranks_on, (std::vector<std::vector<int>>{{0, 2}, {1, 4}, {3}}));
  }
  const NodeMap map = map_of(identities, 0);
  EXPECT_EQ(map.nodes(), 3);
  EXPECT_EQ(map.leader(1), 1);
  EXPECT_EQ(map.local_rank(4), 1);
  EXPECT_EQ(map.local_size(3), 1);
  EXPECT_FALSE(map.every_rank_alone());
  EXPECT_TRUE(map_of({"x", "y"}, 1).every_rank_alone());
}

TEST(NodeGroup, TheSegmentHasNoNameOnceEveryRankHasMappedIt) {
  const std::string mine = segment_prefix() + std::to_string(::getpid()) + "-";
  on_ranks(3, kSmallChunks, [&](NodeGroup& group) {
    group.barrier();  // every rank has joined
    EXPECT_TRUE(segments_named(mine).empty()) << "a crash from here on can leak nothing";
  });
}

TEST(SharedSegment, CreatingOne_RemovesThoseWhoseCreatorDied) {
  const pid_t dead = ::fork();
  if (dead == 0) ::_exit(0);
  ::waitpid(dead, nullptr, 0);  // reaped: its PID names no process now
  const std::string orphan = segment_prefix() + std::to_string(dead) + "-12345";
  const int descriptor = ::shm_open(("/" + orphan).c_str(), O_CREAT | O_RDWR, 0600);
  ASSERT_GE(descriptor, 0);
  ::close(descriptor);
  const std::string alive = segment_prefix() + std::to_string(::getpid()) + "-orphan-test";
  const int mine = ::shm_open(("/" + alive).c_str(), O_CREAT | O_RDWR, 0600);
  ASSERT_GE(mine, 0);
  ::close(mine);

  SharedSegment segment = SharedSegment::create(4096);
  EXPECT_TRUE(segments_named(orphan).empty()) << "the dead creator's segment is removed";
  EXPECT_EQ(segments_named(alive).size(), 1u) << "a living creator's is kept";
  ::shm_unlink(("/" + alive).c_str());
}

}  // namespace
}  // namespace fabric::collectives::shm
