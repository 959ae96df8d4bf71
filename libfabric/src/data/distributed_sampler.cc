#include <ATen/CPUGeneratorImpl.h>
#include <torch/serialize/archive.h>

#include <algorithm>
#include <numeric>

#include "fabric/data.h"
#include "fabric/errors.h"

namespace fabric::data {

DistributedSampler::DistributedSampler(std::size_t size, Options options, EpochCounter epoch)
    : size_(size), options_(options), epoch_(epoch ? std::move(epoch) : std::make_shared<std::uint64_t>(0)) {
  if (options_.num_replicas < 1 || options_.rank < 0 || options_.rank >= options_.num_replicas) {
    throw UsageError("DistributedSampler: rank " + std::to_string(options_.rank) + " is not in [0, " +
                     std::to_string(options_.num_replicas) + "); num_replicas must be positive.");
  }
}

std::size_t DistributedSampler::num_samples() const {
  const std::size_t replicas = static_cast<std::size_t>(options_.num_replicas);
  if (options_.drop_last && size_ % replicas != 0) return (size_ - replicas + replicas - 1) / replicas;
  return (size_ + replicas - 1) / replicas;
}

void DistributedSampler::reset(std::optional<std::size_t> new_size) {
  if (new_size) size_ = *new_size;
  std::vector<std::size_t> all(size_);
  if (options_.shuffle) {
    // torch.randperm with a generator seeded by seed + epoch: the permutation PyTorch's
    // DistributedSampler draws, so both sides of a parity test see the same order.
    auto generator = at::make_generator<at::CPUGeneratorImpl>(options_.seed + *epoch_);
    torch::Tensor permutation = torch::randperm(static_cast<std::int64_t>(size_), generator);
    const auto* values = permutation.data_ptr<std::int64_t>();
    for (std::size_t i = 0; i < size_; ++i) all[i] = static_cast<std::size_t>(values[i]);
  } else {
    std::iota(all.begin(), all.end(), std::size_t{0});
  }
  const std::size_t replicas = static_cast<std::size_t>(options_.num_replicas);
  const std::size_t total = num_samples() * replicas;
  if (all.size() < total && !all.empty()) {  // pad by wrapping around to equal shards
    const std::size_t original = all.size();
    for (std::size_t i = 0; all.size() < total; ++i) all.push_back(all[i % original]);
  }
  all.resize(total);
  indices_.clear();
  for (std::size_t i = static_cast<std::size_t>(options_.rank); i < total; i += replicas) indices_.push_back(all[i]);
  position_ = 0;
}

std::optional<std::vector<std::size_t>> DistributedSampler::next(std::size_t batch_size) {
  if (position_ >= indices_.size()) return std::nullopt;
  const std::size_t end = std::min(indices_.size(), position_ + batch_size);
  std::vector<std::size_t> batch(indices_.begin() + static_cast<std::ptrdiff_t>(position_),
                                 indices_.begin() + static_cast<std::ptrdiff_t>(end));
  position_ = end;
  return batch;
}

void DistributedSampler::save(torch::serialize::OutputArchive& archive) const {
  archive.write("epoch", torch::tensor(static_cast<std::int64_t>(*epoch_)), /*is_buffer=*/true);
  archive.write("position", torch::tensor(static_cast<std::int64_t>(position_)), /*is_buffer=*/true);
}

void DistributedSampler::load(torch::serialize::InputArchive& archive) {
  torch::Tensor epoch, position;
  archive.read("epoch", epoch, /*is_buffer=*/true);
  archive.read("position", position, /*is_buffer=*/true);
  *epoch_ = static_cast<std::uint64_t>(epoch.item<std::int64_t>());
  reset();
  position_ = static_cast<std::size_t>(position.item<std::int64_t>());
}

}  // namespace fabric::data
