// What FSDPStrategy keeps per set-up module: its flat-parameter units and which window the
// parameters are in. README.md in this folder explains the two windows and how an
// operation's use of a parameter gathers its unit.
#pragma once

#include <torch/nn/module.h>
#include <torch/types.h>
#include <c10/core/StorageImpl.h>

#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <unordered_set>
#include <vector>

#include "fabric/collective.h"
#include "fabric/strategies.h"

namespace fabric::strategies {

// One parameter's place in its unit's flat buffer.
struct FlatMember {
  std::string name;            // as module.named_parameters() names it
  torch::Tensor param;         // the module's own tensor; its data is swapped between views
  std::vector<std::int64_t> shape;
  std::int64_t offset = 0;     // in the flat buffer
  std::int64_t numel = 0;
  // The part of [offset, offset + numel) that this rank's shard holds, relative to the
  // shard's start (local_numel may be 0).
  std::int64_t local_offset = 0;
  std::int64_t local_numel = 0;
  std::int64_t piece_begin = 0;  // where that part starts within the parameter's elements
  torch::Tensor full_view;       // the parameter's full shape over the unit's full buffer
  torch::Tensor shard_view;      // its piece of the local shard (1-D; NO_SHARD: full shape)
};

// A flat-parameter unit: the parameters of one wrapped submodule, flattened in order and
// padded to a multiple of the world size, of which this rank keeps shard `rank`.
class FlatUnit {
 public:
  FlatUnit(std::string module_name, std::vector<FlatMember> members, int rank, int world_size, bool sharded);

  const std::string& module_name() const { return module_name_; }
  std::vector<FlatMember>& members() { return members_; }
  const std::vector<FlatMember>& members() const { return members_; }
  std::int64_t total_numel() const { return total_numel_; }
  std::int64_t shard_numel() const { return shard_numel_; }
  std::int64_t shard_begin() const { return shard_begin_; }
  bool sharded() const { return sharded_; }
  torch::Tensor& shard() { return shard_; }

  // The storage of the full buffer, for finding the unit from a tensor that uses it.
  const c10::StorageImpl* full_storage() const { return full_.storage().unsafeGetStorageImpl(); }
  bool gathered() const { return gathered_; }
  void gather(Collective& collective);  // allocates the full buffer and fills it from every shard
  void release();                       // frees the full buffer's memory (its views stay)

  // Parameters as full-shape views of the full buffer (compute) or pieces of the shard
  // (optimizer). Entering compute keeps what gradients there were (accumulation).
  void enter_compute();
  void enter_optimizer();

  // One parameter's gradient arrived (autograd's post-accumulate hook); true once all of
  // the unit's trainable parameters have one.
  bool note_gradient();
  bool reduced() const { return reduced_; }
  bool any_gradient_arrived() const { return arrived_ > 0; }
  int trainable() const { return trainable_; }
  // Flattens the full gradients (zeros for parameters without one), averages them across
  // ranks and adds this rank's part to the shard's gradient; frees the full gradients.
  // Without `sync` (no_backward_sync) they are only added up locally, for the next sync.
  void reduce_gradients(Collective& collective, bool sync);
  const torch::Tensor& shard_grad() const { return shard_grad_; }
  // For zero_grad: forgets the gradients summed under no_backward_sync, and with
  // drop_gradients (in the compute window) those kept when it opened too; param.grad()
  // holds neither.
  void drop_unsynced() { unsynced_ = torch::Tensor(); }
  void drop_gradients() {
    drop_unsynced();
    shard_grad_ = torch::Tensor();
  }

 private:
  std::string module_name_;
  std::vector<FlatMember> members_;
  std::int64_t total_numel_ = 0, shard_numel_ = 0, shard_begin_ = 0;
  bool sharded_;
  torch::Tensor shard_;       // this rank's part of the parameters
  torch::Tensor full_;        // world_size x shard_numel (NO_SHARD: the shard itself)
  bool gathered_ = false;
  torch::Tensor shard_grad_;  // this rank's part of the averaged gradient; undefined: none yet
  torch::Tensor unsynced_;    // full gradients summed under no_backward_sync, not yet reduced
  int trainable_ = 0, arrived_ = 0;
  bool reduced_ = false;
};

// A module set up by FSDPStrategy.
class ShardedModule {
 public:
  ShardedModule(ShardingStrategy strategy, Collective& collective) : strategy_(strategy), collective_(collective) {}
  ~ShardedModule();
  ShardedModule(const ShardedModule&) = delete;
  ShardedModule& operator=(const ShardedModule&) = delete;

  // Takes ownership of the units (the root's last) and makes every parameter a shard piece.
  void adopt(std::vector<std::unique_ptr<FlatUnit>> units);
  std::vector<std::unique_ptr<FlatUnit>>& units() { return units_; }
  const std::vector<std::unique_ptr<FlatUnit>>& units() const { return units_; }
  ShardingStrategy strategy() const { return strategy_; }
  Collective& collective() { return collective_; }

  // Whether `param` is one of the module's parameters (the same tensor).
  bool holds(const torch::Tensor& param) const { return params_.count(param.unsafeGetTensorImpl()) > 0; }
  bool computing() const { return computing_; }
  // Whether backward has sent a gradient to any unit since the window opened, or has none
  // to send (nothing trainable): the window may close after that backward.
  bool backward_reached() const;
  // What zero_grad cannot reach through param.grad(): the units' held gradients.
  void drop_held_gradients();
  void enter_compute();
  // After backward: reduces the units that backward left unreduced, in order on every rank.
  void finish_backward();
  void enter_optimizer();

  // Gathers `unit` for an operation that also uses `in_use` (never released to make room).
  void gather_for_use(FlatUnit& unit, const std::vector<FlatUnit*>& in_use);
  void release_all();

  bool sync = true;  // false inside no_backward_sync

 private:
  ShardingStrategy strategy_;
  Collective& collective_;
  std::vector<std::unique_ptr<FlatUnit>> units_;
  std::unordered_set<const c10::TensorImpl*> params_;
  std::list<FlatUnit*> gathered_;  // least recently gathered first
  bool computing_ = false;
};

// The dispatcher mode that gathers a unit when an operation uses one of its parameters,
// on or off for this thread. Forward turns it on and restores it after (two calls, so no
// scope); backward holds it on around the engine, whose threads inherit the caller's
// dispatch state.
void set_gather_on_use(bool enabled);
bool gather_on_use_enabled();

}  // namespace fabric::strategies
