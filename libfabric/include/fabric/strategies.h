// The built-in strategies, as instances for FabricOptions::strategy (the strings "auto",
// "single_device", "ddp" and "ddp_find_unused_parameters_true" name the same classes):
//   fabric::Fabric fabric({.strategy = std::make_shared<fabric::DDPStrategy>(
//                              fabric::DDPOptions{.bucket_cap_mb = 50, .static_graph = true})});
// Derive from them to change one step (backward, setup_module, ...) without editing libfabric.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "fabric/state.h"
#include "fabric/strategy.h"

namespace c10d {
class Reducer;
}

namespace fabric {

namespace strategies {
class SubprocessLauncher;
class ShardedModule;
}

// One process on one device: no communication, no sharding, no launch.
class SingleDeviceStrategy : public Strategy {
 public:
  explicit SingleDeviceStrategy(torch::Device device = torch::kCPU) : device_(device) {}

  std::string_view name() const override { return "single_device"; }
  torch::Device root_device() const override { return device_; }

 private:
  torch::Device device_;
};

// torch.nn.parallel.DistributedDataParallel's options, as Lightning's DDPStrategy passes them on.
struct DDPOptions {
  // "gloo" or "nccl"; empty: the device's default (gloo for the CPU, nccl for CUDA).
  std::string process_group_backend = {};
  // How long the rendezvous and any one collective may take; nullopt: FabricOptions::timeout.
  std::optional<std::chrono::milliseconds> timeout = std::nullopt;
  // Gradients are all-reduced in buckets of about this size, each as soon as it is full.
  double bucket_cap_mb = 25.0;
  // Parameters that take no part in a forward are found (by walking the graph from its
  // outputs) and reduced as zeros, instead of being an error at the next step.
  bool find_unused_parameters = false;
  // The set of used parameters and the order of their gradients are the same every step:
  // learned in the first step, after which unused parameters need no graph walk.
  bool static_graph = false;
  // Gradients are views into the reducer's buckets: one copy less, and less memory.
  bool gradient_as_bucket_view = false;
  // Rank zero's buffers (BatchNorm statistics) replace every rank's before each forward.
  bool broadcast_buffers = true;
};

// "ddp": one process per device, gradients averaged across processes by LibTorch's own DDP
// engine (c10d::Reducer): buckets filled in reverse parameter order, each all-reduced
// asynchronously from autograd hooks as soon as its gradients are ready, so communication
// overlaps the rest of backward; the optimizer step finds them done.
class DDPStrategy : public ParallelStrategy {
 public:
  explicit DDPStrategy(DDPOptions options = {});
  ~DDPStrategy() override;

  std::string_view name() const override { return "ddp"; }
  const DDPOptions& options() const { return options_; }
  void configure(ParallelConfig config) override;
  std::chrono::milliseconds timeout() const override { return *options_.timeout; }

  torch::Device root_device() const override;
  int global_rank() const override { return global_rank_; }
  int local_rank() const override { return local_rank_; }
  int node_rank() const override { return node_rank_; }
  int world_size() const override { return world_size_; }
  bool requires_launch() const override;
  std::optional<ShardingOptions> sharding() const override { return ShardingOptions{world_size_, global_rank_}; }

  void launch() override;
  void setup_environment() override;
  void setup_module(torch::nn::Module& module) override;
  void before_forward(torch::nn::Module& module) override;
  void after_forward(torch::nn::Module& module, const std::vector<torch::Tensor>& outputs) override;
  Scope no_backward_sync(torch::nn::Module& module, bool enabled) override;

  void barrier(std::string_view name = {}) override;
  void broadcast(torch::Tensor& tensor, int src) override;
  void all_reduce(torch::Tensor& tensor, ReduceOp op) override;
  std::vector<torch::Tensor> all_gather(const torch::Tensor& tensor) override;

  // What the collectives run on once set up, the backend's own name: "shm" (CPU, every rank
  // on this node), "shm+gloo" (CPU, shared memory within each node and Gloo between them),
  // "gloo" or "nccl"; before that, what DDPOptions asked for (Lightning's
  // process_group_backend).
  std::string process_group_backend() const;

  // The reducer's buckets for a set-up module, each as the names of its parameters: what
  // bucket_cap_mb decided (after the first step, rebuilt in the order gradients arrived).
  std::vector<std::vector<std::string>> buckets(const torch::nn::Module& module) const;

 protected:
  // The processes' collectives once setup_environment() connected them; a UsageError before.
  Collective& collective();
  // Every rank starts from rank zero's parameters and buffers.
  void broadcast_from_rank_zero(torch::nn::Module& module);

 private:
  struct Replica;  // per set-up module: its reducer and whether to synchronise
  Replica& replica_of(const torch::nn::Module& module) const;

  DDPOptions options_;
  std::vector<torch::Device> parallel_devices_;
  int num_nodes_ = 1;
  std::shared_ptr<ClusterEnvironment> environment_;
  bool environment_is_plugin_ = false;  // a user's ClusterEnvironment is never re-detected
  int global_rank_ = 0, local_rank_ = 0, node_rank_ = 0, world_size_ = 1;
  std::unique_ptr<strategies::SubprocessLauncher> launcher_;
  std::unique_ptr<Collective> collective_;
  std::map<const torch::nn::Module*, std::unique_ptr<Replica>> replicas_;
};

// What FSDP shards (torch.distributed.fsdp.ShardingStrategy's names).
enum class ShardingStrategy {
  kFullShard,   // "FULL_SHARD": parameters, gradients and optimizer state; a unit's full
                // parameters exist only while an operation uses them
  kShardGradOp, // "SHARD_GRAD_OP": gradients and optimizer state; full parameters stay
                // gathered from their first use in forward until backward ends
  kNoShard,     // "NO_SHARD": nothing (DDP through FSDP's machinery)
};

// "FULL_SHARD", "SHARD_GRAD_OP" or "NO_SHARD"; a ConfigurationError naming them otherwise.
ShardingStrategy parse_sharding_strategy(std::string_view name);
std::string_view to_string(ShardingStrategy strategy);

// Lightning's FSDPStrategy arguments that Fabric for C++ has.
struct FSDPOptions {
  ShardingStrategy sharding_strategy = ShardingStrategy::kFullShard;
  // The auto-wrap policy: every submodule whose Module::name() is in this set (a C++ class
  // name as LibTorch reports it, "torch::nn::LinearImpl", or your own "BlockImpl") becomes
  // a unit of its own, as ModuleWrapPolicy does for layer classes...
  std::set<std::string> auto_wrap_module_types = {};
  // ...and so does every submodule whose parameters not yet in a unit number at least this
  // (size_based_auto_wrap_policy's min_num_params); 0: off. What no unit takes is the root's.
  std::int64_t auto_wrap_min_num_params = 0;
  // How fabric.save writes a sharded module: "sharded" (a folder, one file per rank and an
  // index, resharded on load to any world size) or "full" (one file gathered on rank zero,
  // the same as DDP's).
  std::string state_dict_type = "sharded";
  std::string process_group_backend = {};  // as DDPOptions
  std::optional<std::chrono::milliseconds> timeout = std::nullopt;
};

// "fsdp": Fully Sharded Data Parallel on Gloo (CPU) or NCCL (CUDA). Each unit (an auto-wrapped
// submodule, and the root with what is left) keeps its parameters as one flat buffer split
// into world_size shards; a rank holds its shard only. The parameters stay the module's own
// tensors (use_orig_params): between steps each one is a 1-D view of its piece of the local
// shard, with its gradient the matching piece of the reduced gradient, so an optimizer built
// from model->parameters() after setup_module steps the local shard and keeps state for it
// alone. Within forward and backward every parameter has its full shape; an operation that
// reads one all-gathers its unit first (strategies/fsdp/README.md says how), and a unit's
// gradients are averaged across ranks as soon as backward has produced all of them, each
// rank keeping its shard's part.
// Process handling (launch, ranks, collectives) is DDP's.
class FSDPStrategy : public DDPStrategy {
 public:
  explicit FSDPStrategy(FSDPOptions options = {});
  ~FSDPStrategy() override;

  std::string_view name() const override { return "fsdp"; }
  const FSDPOptions& fsdp_options() const { return fsdp_options_; }

  void setup_module(torch::nn::Module& module) override;
  void setup_optimizer(torch::optim::Optimizer& optimizer) override;
  void before_forward(torch::nn::Module& module) override;
  void after_forward(torch::nn::Module& module, const std::vector<torch::Tensor>& outputs) override;
  void forward_failed(torch::nn::Module& module) override;
  bool requires_fabric_backward() const override { return true; }
  void before_zero_grad(torch::optim::Optimizer& optimizer) override;
  void backward(const torch::Tensor& loss, torch::nn::Module* module, const BackwardOptions& options) override;
  StepOutcome optimizer_step(torch::optim::Optimizer& optimizer, const LossClosure& closure) override;
  Scope no_backward_sync(torch::nn::Module& module, bool enabled) override;
  double clip_gradients_norm(torch::nn::Module& module, torch::optim::Optimizer& optimizer, double max_norm,
                             double norm_type, bool error_if_nonfinite) override;

  // fabric.save / fabric.load for states holding sharded modules (every rank calls them):
  // state_dict_type "sharded" writes a folder, "full" one file from rank zero; load reads
  // either, a folder from any world size. state_dict_type: this save's instead of the options'.
  void save_checkpoint(const std::string& path, const State& state, const SaveFilter& filter,
                       std::optional<std::string> state_dict_type = std::nullopt);
  State load_checkpoint(const std::string& path, State& state, bool strict);

  // Makes the scaler's skip-or-step decision one for all ranks (each sees only its shard's
  // gradients). setup_module does it for the precision's own scaler ("16-mixed", on CUDA).
  void shard_grad_scaler(GradScaler& scaler);

  // The set-up module's units, each as the names of its parameters (the root's last).
  std::vector<std::vector<std::string>> units(const torch::nn::Module& module) const;
  // The sharded state of a set-up module (for checkpoints); nullptr for a module it did not set up.
  strategies::ShardedModule* sharded(const torch::nn::Module& module) const;

 private:
  // A set-up module's forward in progress: whether its window was open before, and whether
  // gathering on use was on (forwards nest: a module may call another).
  struct OpenForward {
    strategies::ShardedModule* state;
    bool was_open;
    bool gathering_before;
  };

  strategies::ShardedModule& sharded_of(const torch::nn::Module& module) const;
  void finish_compute(strategies::ShardedModule& sharded);
  OpenForward end_forward(torch::nn::Module& module);

  FSDPOptions fsdp_options_;
  std::map<const torch::nn::Module*, std::unique_ptr<strategies::ShardedModule>> modules_;
  std::vector<OpenForward> forwards_;  // innermost last
};

// Lightning's `fabric consolidate` (and `fabricd consolidate FOLDER FILE`): the sharded
// folder an fsdp run saved, from any world size, as one full checkpoint file, the same as
// DDP's, which Python's torch.load opens. CheckpointError when the folder is incomplete or
// damaged (nothing is written then).
void consolidate_sharded_checkpoint(const std::string& folder, const std::string& file);

}  // namespace fabric
