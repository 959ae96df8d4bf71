// DistributedSampler: disjoint shards that cover the data set, padded to equal length,
// reshuffled per epoch from seed + epoch (PyTorch's permutation is checked in the parity test).
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <set>

#include "fabric/data.h"

namespace fabric::data {
namespace {

std::vector<std::size_t> shard(std::size_t size, int replicas, int rank, bool shuffle, std::uint64_t epoch) {
  DistributedSampler sampler(size, {.num_replicas = replicas, .rank = rank, .shuffle = shuffle, .seed = 3},
                             std::make_shared<std::uint64_t>(epoch));
  sampler.reset();
  return sampler.indices();
}

TEST(DistributedSampler, ShardsAreDisjointAndCoverTheDataSet) {
  for (bool shuffle : {false, true}) {
    std::multiset<std::size_t> seen;
    for (int rank = 0; rank < 4; ++rank) {
      auto indices = shard(12, 4, rank, shuffle, 0);
      EXPECT_EQ(indices.size(), 3u);
      seen.insert(indices.begin(), indices.end());
    }
    std::vector<std::size_t> all(seen.begin(), seen.end());
    std::vector<std::size_t> expected(12);
    std::iota(expected.begin(), expected.end(), 0);
    EXPECT_EQ(all, expected) << "shuffle=" << shuffle;
  }
}

TEST(DistributedSampler, UnevenSizes_ArePaddedByWrappingAround) {
  // 10 samples over 4 ranks: 3 each, the last two positions repeat samples 0 and 1.
  EXPECT_EQ(shard(10, 4, 0, false, 0), (std::vector<std::size_t>{0, 4, 8}));
  EXPECT_EQ(shard(10, 4, 2, false, 0), (std::vector<std::size_t>{2, 6, 0}));
  EXPECT_EQ(shard(10, 4, 3, false, 0), (std::vector<std::size_t>{3, 7, 1}));
}

TEST(DistributedSampler, EpochChangesTheOrder_SameEpochRepeatsIt) {
  EXPECT_EQ(shard(50, 2, 1, true, 4), shard(50, 2, 1, true, 4));
  EXPECT_NE(shard(50, 2, 1, true, 4), shard(50, 2, 1, true, 5));
}

TEST(DistributedSampler, NextHandsOutBatchesUntilTheShardIsDone) {
  DistributedSampler sampler(7, {}, nullptr);
  sampler.reset();
  EXPECT_EQ(sampler.next(3)->size(), 3u);
  EXPECT_EQ(sampler.next(3)->size(), 3u);
  EXPECT_EQ(sampler.next(3)->size(), 1u);
  EXPECT_FALSE(sampler.next(3).has_value());
}

TEST(DistributedSampler, RankOutsideTheWorld_IsRefused) {
  EXPECT_THROW(DistributedSampler(4, {.num_replicas = 2, .rank = 2}, nullptr), std::exception);
}

}  // namespace
}  // namespace fabric::data
