// GrpcStore, the c10d::Store over fabricd's RendezvousService, as c10d's own code uses one:
// the store verbs, c10d's error types for a timeout and for a stale rank, and a PrefixStore
// over it (how process groups namespace their keys).
#include <gtest/gtest.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>

#include <thread>

#include "fabric/worker/grpc_store.h"
#include "test_server.h"

namespace fabric::worker {
namespace {

using std::chrono::milliseconds;

std::vector<std::uint8_t> bytes(const std::string& text) { return {text.begin(), text.end()}; }

class GrpcStoreTest : public ::testing::Test {
 protected:
  testing::TestRendezvousServer server{"job", 2};
  c10::intrusive_ptr<GrpcStore> store(int rank, int generation = 0, milliseconds timeout = milliseconds(5000)) {
    auto client = std::make_shared<RendezvousClient>(
        RankIdentity{.endpoint = server.endpoint(),
                     .job_id = "job",
                     .generation = generation,
                     .rank = rank,
                     .secret = testing::kTestJobSecret});
    return c10::make_intrusive<GrpcStore>(client, timeout);
  }
};

TEST_F(GrpcStoreTest, VerbsBehaveAsC10dStoreVerbs) {
  auto rank0 = store(0), rank1 = store(1);
  std::thread late([&] {
    std::this_thread::sleep_for(milliseconds(50));
    rank1->set("addr", bytes("10.0.0.1:29500"));
  });
  EXPECT_EQ(rank0->get("addr"), bytes("10.0.0.1:29500"));  // blocks until rank 1 sets it
  late.join();
  EXPECT_EQ(rank0->add("n", 1), 1);
  EXPECT_EQ(rank1->add("n", 1), 2);
  EXPECT_EQ(rank0->compareSet("c", {}, bytes("x")), bytes("x"));
  EXPECT_TRUE(rank0->check({"addr", "n", "c"}));
  EXPECT_EQ(rank0->getNumKeys(), 3);
  EXPECT_TRUE(rank0->deleteKey("c"));
  rank0->wait({"addr", "n"});
  auto clone = rank0->clone();
  EXPECT_EQ(clone->get("n"), bytes("2"));
}

TEST_F(GrpcStoreTest, TimeoutIsAC10dStoreError) {
  auto rank0 = store(0, 0, milliseconds(100));
  EXPECT_THROW(rank0->get("missing"), c10::DistStoreError);
  EXPECT_THROW(rank0->wait({"missing"}, milliseconds(50)), c10::DistStoreError);
}

TEST_F(GrpcStoreTest, StaleRankGetsAnErrorSayingItMustExit) {
  auto stale = store(0, 0);
  server.begin_generation(1);
  try {
    stale->set("k", bytes("v"));
    FAIL() << "a stale rank was served";
  } catch (const c10::DistError& error) {
    EXPECT_NE(std::string(error.what()).find("older generation"), std::string::npos) << error.what();
  }
}

TEST_F(GrpcStoreTest, PrefixStoreOverItNamespacesKeys) {
  auto base = store(0);
  c10d::PrefixStore group("pg0", base);
  group.set("rank0", bytes("ready"));
  EXPECT_TRUE(base->check({"pg0/rank0"}));
  EXPECT_EQ(group.get("rank0"), bytes("ready"));
}

}  // namespace
}  // namespace fabric::worker
