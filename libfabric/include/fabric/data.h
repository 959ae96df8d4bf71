// Data loading for Fabric: a sampler that shards and shuffles like PyTorch's
// DistributedSampler (one shard per rank, padded to equal length, reshuffled every epoch
// from a seed all ranks share), and FabricDataLoader, which moves every batch to the
// device and advances the sampler's epoch each time iteration starts.
#pragma once

#include <torch/data/dataloader.h>
#include <torch/data/samplers/base.h>
#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "fabric/apply.h"

namespace fabric {

struct DataLoaderOptions {
  std::size_t batch_size = 1;
  bool shuffle = false;
  bool drop_last = false;
  std::size_t num_workers = 0;
  // Move each batch to fabric.device() as it is produced.
  bool move_to_device = true;
  // Shard the data across ranks under a distributed strategy.
  bool use_distributed_sampler = true;
};

namespace data {

// The epoch a sampler shuffles for, shared between the sampler (which the LibTorch loader
// owns) and the FabricDataLoader that advances it.
using EpochCounter = std::shared_ptr<std::uint64_t>;

// Indices 0..size-1, optionally shuffled with a generator seeded by seed + epoch (the same
// permutation torch.utils.data.DistributedSampler draws), padded by wrapping around to a
// multiple of num_replicas (or truncated with drop_last), and strided so that rank r reads
// positions r, r + num_replicas, ...
class DistributedSampler : public torch::data::samplers::Sampler<> {
 public:
  struct Options {
    int num_replicas = 1;
    int rank = 0;
    bool shuffle = false;
    std::uint64_t seed = 0;
    bool drop_last = false;
  };
  DistributedSampler(std::size_t size, Options options, EpochCounter epoch);

  void reset(std::optional<std::size_t> new_size = std::nullopt) override;
  std::optional<std::vector<std::size_t>> next(std::size_t batch_size) override;
  void save(torch::serialize::OutputArchive& archive) const override;
  void load(torch::serialize::InputArchive& archive) override;

  // The indices this rank reads in the current epoch, in order.
  const std::vector<std::size_t>& indices() const { return indices_; }
  // How many samples each rank reads per epoch.
  std::size_t num_samples() const;

 private:
  std::size_t size_;
  Options options_;
  EpochCounter epoch_;
  std::vector<std::size_t> indices_;
  std::size_t position_ = 0;
};

}  // namespace data

// Wraps a LibTorch data loader: iterating it yields the loader's batches moved to the
// device, and each new iteration first advances the sampler's epoch (0, 1, 2, ...), so a
// shuffled sampler draws a new order every epoch, as Lightning's _FabricDataLoader does.
template <typename Loader>
class FabricDataLoader {
 public:
  using Batch = typename Loader::BatchType;

  FabricDataLoader(std::unique_ptr<Loader> loader, std::optional<torch::Device> device,
                   data::EpochCounter epoch = nullptr, std::optional<std::size_t> num_batches = std::nullopt)
      : loader_(std::move(loader)), device_(device), epoch_(std::move(epoch)), num_batches_(num_batches) {}

  class Iterator {
   public:
    Iterator(torch::data::Iterator<Batch> inner, std::optional<torch::Device> device)
        : inner_(std::move(inner)), device_(device) {}
    Batch& operator*() {
      if (!current_) current_ = device_ ? move_data_to_device(*inner_, *device_) : *inner_;
      return *current_;
    }
    Batch* operator->() { return &**this; }
    Iterator& operator++() {
      ++inner_;
      current_.reset();
      return *this;
    }
    bool operator==(const Iterator& other) const { return inner_ == other.inner_; }
    bool operator!=(const Iterator& other) const { return !(*this == other); }

   private:
    torch::data::Iterator<Batch> inner_;
    std::optional<torch::Device> device_;
    std::optional<Batch> current_;
  };

  Iterator begin() {
    if (epoch_) *epoch_ = iterations_;
    ++iterations_;
    return Iterator(loader_->begin(), device_);
  }
  Iterator end() { return Iterator(loader_->end(), device_); }

  // Batches per epoch on this rank, when the sampler knows it.
  std::optional<std::size_t> size() const { return num_batches_; }
  std::optional<torch::Device> device() const { return device_; }
  Loader& loader() { return *loader_; }

 private:
  std::unique_ptr<Loader> loader_;
  std::optional<torch::Device> device_;
  data::EpochCounter epoch_;
  std::optional<std::size_t> num_batches_;
  std::uint64_t iterations_ = 0;
};

}  // namespace fabric
