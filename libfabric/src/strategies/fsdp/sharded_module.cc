#include "strategies/fsdp/sharded_module.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/stack.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <algorithm>
#include <mutex>
#include <shared_mutex>
#include <unordered_map>

namespace fabric::strategies {
namespace {

// LibTorch's one functionality key for a C++ mode: included per thread, above Autograd (so
// the fallback sees every operation before autograd records it), with no kernels of its
// own. Its name says "testing" because PyTorch's Python modes use others; nothing else in a
// C++ program registers it.
constexpr c10::DispatchKey kGatherOnUseKey = c10::DispatchKey::TESTING_ONLY_GenericMode;
// FULL_SHARD keeps at most this many units gathered: the one in use and the one before it
// (a layer's output feeds the next, and backward walks back through both).
constexpr std::size_t kMaxGatheredUnits = 2;

struct Owner {
  FlatUnit* unit;
  ShardedModule* module;
};

// Full buffers' storages, to find a unit from any tensor that uses one: process-wide, as
// the dispatcher fallback is. Written at setup and teardown, read on every operation.
class StorageRegistry {
 public:
  static StorageRegistry& instance() {
    static auto* registry = new StorageRegistry();  // outlives every static destructor
    return *registry;
  }
  void add(const c10::StorageImpl* storage, Owner owner) {
    std::unique_lock lock(mutex_);
    owners_[storage] = owner;
  }
  void remove(const c10::StorageImpl* storage) {
    std::unique_lock lock(mutex_);
    owners_.erase(storage);
  }
  std::optional<Owner> find(const c10::StorageImpl* storage) const {
    std::shared_lock lock(mutex_);
    auto found = owners_.find(storage);
    if (found == owners_.end()) return std::nullopt;
    return found->second;
  }

 private:
  mutable std::shared_mutex mutex_;
  std::unordered_map<const c10::StorageImpl*, Owner> owners_;
};

// The boxed fallback: gathers the units of every tensor argument, then runs the operation
// below this key.
void gather_operands(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  std::vector<Owner> used;
  std::vector<FlatUnit*> used_units;
  const auto note = [&](const at::Tensor& tensor) {
    if (!tensor.defined() || !tensor.has_storage()) return;
    auto owner = StorageRegistry::instance().find(tensor.storage().unsafeGetStorageImpl());
    if (!owner || std::find(used_units.begin(), used_units.end(), owner->unit) != used_units.end()) return;
    used.push_back(*owner);
    used_units.push_back(owner->unit);
  };
  for (const c10::IValue& argument : torch::jit::last(*stack, op.schema().arguments().size())) {
    if (argument.isTensor()) {
      note(argument.toTensor());
    } else if (argument.isList()) {
      for (const c10::IValue& element : argument.toListRef()) {
        if (element.isTensor()) note(element.toTensor());
      }
    }
  }
  c10::impl::ExcludeDispatchKeyGuard below(kGatherOnUseKey);
  for (const Owner& owner : used) owner.module->gather_for_use(*owner.unit, used_units);
  op.callBoxed(stack);
}

void register_fallback_once() {
  static auto* handle = new c10::RegistrationHandleRAII(c10::Dispatcher::singleton().registerFallback(
      kGatherOnUseKey, c10::KernelFunction::makeFromBoxedFunction<&gather_operands>(), "fabric FSDP gather-on-use"));
  (void)handle;
}

// Autograd calls this once a parameter's gradient has been accumulated: the unit's last
// one reduces the unit.
class GradientArrived : public torch::autograd::PostAccumulateGradHook {
 public:
  GradientArrived(ShardedModule& module, FlatUnit& unit) : module_(module), unit_(unit) {}
  void operator()(const torch::autograd::Variable&) override {
    if (!module_.computing()) return;
    if (unit_.note_gradient()) unit_.reduce_gradients(module_.collective(), module_.sync);
  }

 private:
  ShardedModule& module_;
  FlatUnit& unit_;
};

}  // namespace

void set_gather_on_use(bool enabled) { c10::impl::tls_set_dispatch_key_included(kGatherOnUseKey, enabled); }
bool gather_on_use_enabled() { return c10::impl::tls_is_dispatch_key_included(kGatherOnUseKey); }

FlatUnit::FlatUnit(std::string module_name, std::vector<FlatMember> members, int rank, int world_size, bool sharded)
    : module_name_(std::move(module_name)), members_(std::move(members)), sharded_(sharded) {
  for (auto& member : members_) {
    member.offset = total_numel_;
    member.numel = member.param.numel();
    member.shape = member.param.sizes().vec();
    total_numel_ += member.numel;
    if (member.param.requires_grad()) ++trainable_;
  }
  shard_numel_ = sharded_ ? (total_numel_ + world_size - 1) / world_size : total_numel_;
  shard_begin_ = sharded_ ? rank * shard_numel_ : 0;
  const auto options = members_.front().param.options().requires_grad(false);
  torch::NoGradGuard no_grad;
  shard_ = torch::zeros({shard_numel_}, options);
  full_ = sharded_ ? torch::empty({shard_numel_ * world_size}, options) : shard_;
  gathered_ = true;
  for (auto& member : members_) {
    const std::int64_t begin = std::max(member.offset, shard_begin_);
    const std::int64_t end = std::min(member.offset + member.numel, shard_begin_ + shard_numel_);
    member.local_numel = std::max<std::int64_t>(0, end - begin);
    member.local_offset = std::clamp<std::int64_t>(begin - shard_begin_, 0, shard_numel_);
    member.piece_begin = member.local_numel > 0 ? begin - member.offset : 0;
    if (member.local_numel > 0) {
      shard_.narrow(0, member.local_offset, member.local_numel)
          .copy_(member.param.detach().reshape({-1}).narrow(0, member.piece_begin, member.local_numel));
    }
    // Views are made while the full buffer has memory: narrow checks its bounds.
    member.full_view = full_.narrow(0, member.offset, member.numel).view(member.shape);
    member.shard_view = sharded_ ? shard_.narrow(0, member.local_offset, member.local_numel) : member.full_view;
  }
  release();
}

void FlatUnit::gather(Collective& collective) {
  if (gathered_) return;
  c10::StorageImpl* storage = full_.storage().unsafeGetStorageImpl();
  storage->set_data_ptr_noswap(storage->allocator()->allocate(storage->nbytes()));
  gathered_ = true;
  torch::NoGradGuard no_grad;
  const auto shards = collective.all_gather(shard_);
  for (std::size_t rank = 0; rank < shards.size(); ++rank) {
    full_.narrow(0, static_cast<std::int64_t>(rank) * shard_numel_, shard_numel_).copy_(shards[rank]);
  }
}

void FlatUnit::release() {
  if (!sharded_ || !gathered_) return;
  full_.storage().unsafeGetStorageImpl()->set_data_ptr_noswap(at::DataPtr(nullptr, full_.device()));
  gathered_ = false;
}

void FlatUnit::enter_compute() {
  torch::NoGradGuard no_grad;
  bool any_gradient = false;
  for (const auto& member : members_) any_gradient = any_gradient || member.param.grad().defined();
  // Gradients left from an earlier backward (no zero_grad in between) are kept here and
  // added to, as autograd would have accumulated them.
  torch::Tensor kept = any_gradient ? torch::zeros({shard_numel_}, shard_.options()) : torch::Tensor();
  for (auto& member : members_) {
    if (const auto& grad = member.param.grad(); grad.defined() && member.local_numel > 0) {
      kept.narrow(0, member.local_offset, member.local_numel).copy_(grad.reshape({-1}));
    }
    member.param.mutable_grad() = torch::Tensor();
    member.param.set_data(member.full_view);
  }
  shard_grad_ = kept;
  arrived_ = 0;
  reduced_ = false;
}

void FlatUnit::enter_optimizer() {
  for (auto& member : members_) {
    member.param.set_data(member.shard_view);
    torch::Tensor grad;
    if (member.param.requires_grad() && shard_grad_.defined()) {
      grad = shard_grad_.narrow(0, member.local_offset, member.local_numel);
      if (!sharded_) grad = grad.view(member.shape);
    }
    member.param.mutable_grad() = grad;
  }
}

bool FlatUnit::note_gradient() { return ++arrived_ == trainable_ && !reduced_; }

void FlatUnit::reduce_gradients(Collective& collective, bool sync) {
  c10::impl::ExcludeDispatchKeyGuard below(kGatherOnUseKey);
  torch::NoGradGuard no_grad;
  torch::Tensor flat = torch::zeros({full_.numel()}, shard_.options());
  for (auto& member : members_) {
    if (const auto& grad = member.param.grad(); grad.defined()) {
      flat.narrow(0, member.offset, member.numel).copy_(grad.reshape({-1}));
    }
    member.param.mutable_grad() = torch::Tensor();  // its memory is what sharding saves
  }
  reduced_ = true;
  if (unsynced_.defined()) flat.add_(unsynced_);
  if (!sync) {
    unsynced_ = flat;
    return;
  }
  unsynced_ = torch::Tensor();
  // A reduce-scatter, as an all-reduce of which each rank keeps its part (the Collective
  // has no reduce_scatter yet: twice the traffic, the same result).
  collective.all_reduce(flat, ReduceOp::kMean);
  torch::Tensor mine = flat.narrow(0, shard_begin_, shard_numel_);
  shard_grad_ = shard_grad_.defined() ? shard_grad_.add_(mine) : mine.clone();
}

ShardedModule::~ShardedModule() {
  for (auto& unit : units_) {
    if (unit->sharded()) StorageRegistry::instance().remove(unit->full_storage());
    for (auto& member : unit->members()) torch::autograd::impl::set_post_acc_grad_hooks(member.param, nullptr);
  }
}

void ShardedModule::adopt(std::vector<std::unique_ptr<FlatUnit>> units) {
  register_fallback_once();
  units_ = std::move(units);
  for (auto& unit : units_) {
    for (const auto& member : unit->members()) params_.insert(member.param.unsafeGetTensorImpl());
    if (unit->sharded()) StorageRegistry::instance().add(unit->full_storage(), {unit.get(), this});
    for (auto& member : unit->members()) {
      if (!member.param.requires_grad()) continue;
      torch::autograd::impl::set_post_acc_grad_hooks(member.param, std::make_unique<GradientArrived>(*this, *unit));
    }
    unit->enter_optimizer();
  }
}

bool ShardedModule::backward_reached() const {
  bool trainable = false;
  for (const auto& unit : units_) {
    if (unit->any_gradient_arrived()) return true;
    trainable = trainable || unit->trainable() > 0;
  }
  return !trainable;
}

void ShardedModule::drop_held_gradients() {
  // Between steps the shard's gradient is what param.grad() views, and zero_grad clears it
  // there; within a window it is held by the unit alone.
  for (auto& unit : units_) {
    if (computing_) unit->drop_gradients();
    else unit->drop_unsynced();
  }
}

void ShardedModule::enter_compute() {
  if (computing_) return;
  c10::impl::ExcludeDispatchKeyGuard below(kGatherOnUseKey);
  for (auto& unit : units_) unit->enter_compute();
  computing_ = true;
}

void ShardedModule::finish_backward() {
  // Units whose parameters did not all get a gradient (some took no part) are reduced now,
  // in unit order on every rank.
  for (auto& unit : units_) {
    if (computing_ && unit->trainable() > 0 && !unit->reduced()) unit->reduce_gradients(collective_, sync);
  }
}

void ShardedModule::enter_optimizer() {
  if (!computing_) return;
  c10::impl::ExcludeDispatchKeyGuard below(kGatherOnUseKey);
  release_all();
  for (auto& unit : units_) unit->enter_optimizer();
  computing_ = false;
}

void ShardedModule::gather_for_use(FlatUnit& unit, const std::vector<FlatUnit*>& in_use) {
  if (unit.gathered()) {
    gathered_.remove(&unit);
    gathered_.push_back(&unit);
    return;
  }
  if (strategy_ == ShardingStrategy::kFullShard) {
    for (auto it = gathered_.begin(); it != gathered_.end() && gathered_.size() >= kMaxGatheredUnits;) {
      if (std::find(in_use.begin(), in_use.end(), *it) != in_use.end()) {
        ++it;
        continue;
      }
      (*it)->release();
      it = gathered_.erase(it);
    }
  }
  unit.gather(collective_);
  gathered_.push_back(&unit);
}

void ShardedModule::release_all() {
  for (FlatUnit* unit : gathered_) unit->release();
  gathered_.clear();
}

}  // namespace fabric::strategies
