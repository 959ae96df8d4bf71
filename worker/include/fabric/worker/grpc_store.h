// GrpcStore: a c10d::Store whose keys live in fabricd's RendezvousService, so that c10d's
// Gloo and NCCL process groups rendezvous through the launcher rather than a TCPStore one
// rank must serve. The store is the job's and generation's: a rank of an older generation
// is refused (c10::DistStoreError saying so), and a call blocked when the generation ends
// (a peer failed) returns at once instead of running out its timeout.
#pragma once

#include <torch/csrc/distributed/c10d/Store.hpp>

#include <memory>

#include "fabric/worker/rendezvous_client.h"

namespace fabric::worker {

class GrpcStore final : public c10d::Store {
 public:
  GrpcStore(std::shared_ptr<RendezvousClient> client, std::chrono::milliseconds timeout);

  c10::intrusive_ptr<Store> clone() override;

  void set(const std::string& key, const std::vector<std::uint8_t>& value) override;
  std::vector<std::uint8_t> compareSet(const std::string& key, const std::vector<std::uint8_t>& expected,
                                       const std::vector<std::uint8_t>& desired) override;
  // Blocks up to the store's timeout (getTimeout()) for the key to appear.
  std::vector<std::uint8_t> get(const std::string& key) override;
  std::int64_t add(const std::string& key, std::int64_t value) override;
  bool deleteKey(const std::string& key) override;
  bool check(const std::vector<std::string>& keys) override;
  std::int64_t getNumKeys() override;
  void wait(const std::vector<std::string>& keys) override;
  void wait(const std::vector<std::string>& keys, const std::chrono::milliseconds& timeout) override;

 private:
  std::shared_ptr<RendezvousClient> client_;
};

}  // namespace fabric::worker
