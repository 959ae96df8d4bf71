// The bytes LibTorch's CPU tensors hold, now and at most: an allocator that forwards to the
// default one and counts, installed before the first tensor. What the FSDP benchmark reports
// as a rank's peak memory (parameters, gradients, optimizer state and every temporary).
#pragma once

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>

#include <algorithm>
#include <atomic>
#include <cstddef>

namespace bench {

class CountingAllocator final : public c10::Allocator {
 public:
  // Replaces the CPU allocator for the rest of the process; call before any tensor exists.
  static CountingAllocator& install() {
    static auto* counting = new CountingAllocator(c10::GetCPUAllocator());
    c10::SetCPUAllocator(counting, /*priority=*/100);
    return *counting;
  }

  c10::DataPtr allocate(std::size_t bytes) override {
    c10::DataPtr inner = base_->allocate(bytes);
    void* data = inner.get();
    auto* context = new Allocation{std::move(inner), bytes, this};
    const std::size_t now = current_.fetch_add(bytes) + bytes;
    std::size_t seen = peak_.load();
    while (now > seen && !peak_.compare_exchange_weak(seen, now)) {
    }
    return {data, context, &release, c10::Device(c10::kCPU)};
  }
  void copy_data(void* dest, const void* src, std::size_t count) const override { default_copy_data(dest, src, count); }

  std::size_t current() const { return current_.load(); }
  std::size_t peak() const { return peak_.load(); }
  void reset_peak() { peak_.store(current_.load()); }

 private:
  struct Allocation {
    c10::DataPtr inner;
    std::size_t bytes;
    CountingAllocator* owner;
  };
  explicit CountingAllocator(c10::Allocator* base) : base_(base) {}
  static void release(void* context) {
    auto* allocation = static_cast<Allocation*>(context);
    allocation->owner->current_.fetch_sub(allocation->bytes);
    delete allocation;  // frees through the default allocator's own deleter
  }

  c10::Allocator* base_;
  std::atomic<std::size_t> current_{0}, peak_{0};
};

}  // namespace bench
