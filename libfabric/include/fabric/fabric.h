// fabric::Fabric — Lightning Fabric for a LibTorch training loop. A thin conductor: the
// connector resolves the options, the strategy owns placement and communication, the
// precision owns dtypes. Construct it once per process; it is not thread-safe.
//
//   fabric::Fabric fabric({.accelerator = "cpu", .precision = "bf16-mixed"});
//   auto [model, optimizer] = fabric.setup(Net(), [](auto params) {
//     return std::make_shared<torch::optim::AdamW>(params, 1e-3); });
//   auto loader = fabric.setup_dataloader(dataset, {.batch_size = 64, .shuffle = true});
#pragma once

#include <torch/data/dataloader.h>
#include <torch/data/transforms/stack.h>
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>

#include <cstdint>
#include <iostream>
#include <map>
#include <variant>
#include <memory>
#include <optional>
#include <sstream>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "fabric/accelerator.h"
#include "fabric/apply.h"
#include "fabric/callbacks.h"
#include "fabric/data.h"
#include "fabric/errors.h"
#include "fabric/loggers.h"
#include "fabric/options.h"
#include "fabric/precision.h"
#include "fabric/scope.h"
#include "fabric/state.h"
#include "fabric/strategy.h"
#include "fabric/wrappers.h"

namespace fabric {

// A metric for fabric.log: a number, or a one-element tensor (detached and read as a double).
class MetricValue {
 public:
  MetricValue(double value) : value_(value) {}
  MetricValue(float value) : value_(static_cast<double>(value)) {}
  MetricValue(int value) : value_(static_cast<double>(value)) {}
  MetricValue(std::int64_t value) : value_(static_cast<double>(value)) {}
  MetricValue(const torch::Tensor& value) : value_(value) {}
  // The number to log; UsageError naming the metric for a tensor of more than one element.
  double to_double(const std::string& name) const;

 private:
  std::variant<double, torch::Tensor> value_;
};

// Arguments of clip_gradients: exactly one of clip_val and max_norm.
struct ClipOptions {
  std::optional<double> clip_val;
  std::optional<double> max_norm;
  double norm_type = 2.0;
  bool error_if_nonfinite = true;
};

namespace detail {

template <typename T>
struct is_shared_module : std::false_type {};
template <typename Impl>
struct is_shared_module<std::shared_ptr<Impl>> : std::is_base_of<torch::nn::Module, Impl> {};

// A module as users hold one: a TORCH_MODULE holder (`Net`) or a std::shared_ptr<NetImpl>.
template <typename T>
concept ModuleLike = is_shared_module<std::decay_t<T>>::value ||
                     std::is_base_of_v<torch::detail::ModuleHolderIndicator, std::decay_t<T>>;

template <ModuleLike T>
auto module_ptr(T&& module) {
  if constexpr (is_shared_module<std::decay_t<T>>::value) {
    return std::decay_t<T>(std::forward<T>(module));
  } else {
    return module.ptr();
  }
}

// A LibTorch loader over `dataset`; datasets of Examples get their examples stacked into
// one batch tensor each for data and target (torch::data::transforms::Stack).
template <typename Dataset>
auto make_stacking_loader(Dataset dataset, data::DistributedSampler sampler, torch::data::DataLoaderOptions options) {
  using Batch = typename Dataset::BatchType;
  using torch::data::transforms::Stack;
  if constexpr (std::is_same_v<Batch, std::vector<torch::data::Example<>>>) {
    return torch::data::make_data_loader(std::move(dataset).map(Stack<torch::data::Example<>>()), std::move(sampler),
                                         options);
  } else if constexpr (std::is_same_v<Batch, std::vector<torch::data::TensorExample>>) {
    return torch::data::make_data_loader(std::move(dataset).map(Stack<torch::data::TensorExample>()),
                                         std::move(sampler), options);
  } else {
    return torch::data::make_data_loader(std::move(dataset), std::move(sampler), options);
  }
}

template <typename T>
std::shared_ptr<torch::optim::Optimizer> to_shared_optimizer(T&& optimizer) {
  using Plain = std::decay_t<T>;
  if constexpr (std::is_convertible_v<Plain, std::shared_ptr<torch::optim::Optimizer>>) {
    return std::forward<T>(optimizer);
  } else {
    static_assert(std::is_base_of_v<torch::optim::Optimizer, Plain>,
                  "setup() takes optimizers as std::unique_ptr/std::shared_ptr, by value, or a "
                  "factory callable(std::vector<torch::Tensor> params) returning one of those.");
    return std::make_shared<Plain>(std::forward<T>(optimizer));
  }
}

}  // namespace detail

class Fabric {
 public:
  explicit Fabric(FabricOptions options = {});
  ~Fabric();
  Fabric(const Fabric&) = delete;
  Fabric& operator=(const Fabric&) = delete;
  Fabric(Fabric&&) noexcept;
  Fabric& operator=(Fabric&&) noexcept;

  // Starts the processes the strategy needs (ddp with devices=N: N-1 copies of this program,
  // as local ranks 1..N-1), connects them, and sets up this process's device. Under fabricd,
  // torchrun or Slurm the processes exist already and launch() only connects them.
  void launch();
  // launch(), then fn(*this) in every rank; returns fn's result.
  template <typename Fn>
  auto launch(Fn&& fn) {
    launch();
    return std::forward<Fn>(fn)(*this);
  }

  // Converts the module to the precision, moves it to the device, applies the strategy,
  // and wraps it. Optimizers are given as pointers, by value, or as factories called with
  // the set-up module's parameters (so they are created on the device, in its dtype).
  // Returns the FabricModule alone, or a tuple (module, optimizers...).
  template <typename Module, typename... Optimizers>
  auto setup(Module&& module, Optimizers&&... optimizers) {
    auto wrapped = setup_module(std::forward<Module>(module));
    if constexpr (sizeof...(Optimizers) == 0) {
      return wrapped;
    } else {
      return std::tuple(wrapped, setup_optimizer_from(wrapped, std::forward<Optimizers>(optimizers))...);
    }
  }

  template <typename Module>
  auto setup_module(Module&& module, bool move_to_device = true) {
    using Plain = std::decay_t<Module>;
    if constexpr (is_fabric_module<Plain>::value) {
      throw UsageError(
          "A model should be passed only once to the setup_module method: this one is already a "
          "FabricModule. Pass the original module (fabric_module.module()) if you mean to set it up again.");
      return module;
    } else {
      auto ptr = detail::module_ptr(std::forward<Module>(module));
      prepare_module(*ptr, move_to_device);
      return FabricModule<typename decltype(ptr)::element_type>(std::move(ptr), strategy_);
    }
  }

  FabricOptimizer setup_optimizers(std::shared_ptr<torch::optim::Optimizer> optimizer);
  FabricOptimizer setup_optimizers(const FabricOptimizer& optimizer);

  // Builds a loader over `dataset` with a sampler that shards it across ranks (under a
  // distributed strategy) and shuffles it per epoch; stacks Examples into batch tensors.
  template <typename Dataset>
  auto setup_dataloader(Dataset dataset, DataLoaderOptions options = {}) {
    const auto size = dataset.size();
    if (!size) {
      throw UsageError("setup_dataloader needs a dataset whose size() is known; wrap the loader "
                       "yourself with setup_dataloaders(std::unique_ptr<Loader>) for streams.");
    }
    auto epoch = std::make_shared<std::uint64_t>(0);
    data::DistributedSampler sampler(*size, sampler_options(options), epoch);
    const std::size_t per_rank = sampler.num_samples();
    const std::size_t batches = options.drop_last ? per_rank / options.batch_size
                                                  : (per_rank + options.batch_size - 1) / options.batch_size;
    auto loader_options = torch::data::DataLoaderOptions(options.batch_size)
                              .workers(options.num_workers)
                              .drop_last(options.drop_last);
    auto loader = detail::make_stacking_loader(std::move(dataset), std::move(sampler), loader_options);
    using Loader = typename decltype(loader)::element_type;
    return FabricDataLoader<Loader>(std::move(loader), batch_device(options.move_to_device), epoch, batches);
  }

  // Wraps an existing LibTorch loader so that its batches arrive on the device.
  template <typename Loader>
  FabricDataLoader<Loader> setup_dataloaders(std::unique_ptr<Loader> loader, bool move_to_device = true) {
    return FabricDataLoader<Loader>(std::move(loader), batch_device(move_to_device));
  }

  // loss.backward() through the strategy and precision (gradient scaling for "16-mixed"),
  // with autograd's arguments: fabric.backward(loss, {.create_graph = true}).
  void backward(const torch::Tensor& loss, const BackwardOptions& options = {}) {
    backward_through(loss, nullptr, options);
  }
  // The same, naming the model the loss came from (Lightning's model=, for strategies that
  // step one engine per model).
  template <typename Impl>
  void backward(const torch::Tensor& loss, FabricModule<Impl>& model, const BackwardOptions& options = {}) {
    backward_through(loss, model.module().get(), options);
  }

  // Clips gradients by value (clip_val) or by total norm (max_norm), unscaling them first
  // under gradient scaling. Returns the total norm before clipping, nullopt for clip_val.
  std::optional<double> clip_gradients(torch::nn::Module& module, FabricOptimizer& optimizer,
                                       const ClipOptions& options);
  template <typename Impl>
  std::optional<double> clip_gradients(FabricModule<Impl>& module, FabricOptimizer& optimizer,
                                       const ClipOptions& options) {
    return clip_gradients(*module, optimizer, options);
  }

  // The precision's forward context, for operations outside the model's forward.
  Scope autocast();
  // Tensors created in this scope get the precision's dtype ("64-true" => float64).
  Scope init_tensor();
  // Modules created in this scope get the precision's dtype. With empty_init their random
  // initialisation is skipped (weights are left as uninitialised memory, for a checkpoint
  // that overwrites them anyway); deterministic fills such as BatchNorm's still run.
  Scope init_module(bool empty_init = false);

  // Moves tensors (in any nesting of containers) or a module to this process's device.
  template <typename T>
  std::decay_t<T> to_device(T&& value) {
    if constexpr (detail::ModuleLike<T>) {
      strategy_->accelerator().setup_device(device());
      strategy_->module_to_device(*detail::module_ptr(value));
      return std::forward<T>(value);
    } else {
      return move_data_to_device(std::forward<T>(value), device());
    }
  }

  // Prints on local rank zero only (once per node), like Lightning's fabric.print.
  template <typename... Args>
  void print(const Args&... args) const {
    if (local_rank() != 0) return;
    std::ostringstream line;
    const char* separator = "";
    ((line << separator << args, separator = " "), ...);
    std::cout << line.str() << std::endl;
  }

  // Waits until every rank gets here. Under fabricd it is the launcher's barrier, whose
  // timeout (FabricOptions::timeout) names the ranks that never came.
  void barrier(std::string_view name = {});

  // The collectives work on tensors on this process's device (a tensor elsewhere is moved
  // there first, as Lightning does; NCCL takes nothing else) and return them there.
  // Reduces `tensor` across ranks, in place when it is already on the device, and returns
  // it: "mean" (default), "sum", "max", "min". One process: unchanged.
  torch::Tensor all_reduce(torch::Tensor tensor, std::string_view reduce_op = "mean");
  // Every rank's tensor, in rank order (dimension 0 may differ). One process: {tensor}.
  std::vector<torch::Tensor> all_gather(const torch::Tensor& tensor);
  // Rank `src`'s value on every rank: a tensor (same shape everywhere), a string or a number.
  torch::Tensor broadcast(torch::Tensor tensor, int src = 0);
  std::string broadcast(const std::string& value, int src = 0);
  template <typename Number>
    requires std::is_arithmetic_v<Number>
  Number broadcast(Number value, int src = 0) {
    using Wide = std::conditional_t<std::is_floating_point_v<Number>, double, std::int64_t>;
    return static_cast<Number>(broadcast(torch::tensor(static_cast<Wide>(value)), src).template item<Wide>());
  }
  // Rank zero (of the node, with local) runs the block first; the others wait, then run it.
  // All ranks leave together. Use: { auto first = fabric.rank_zero_first(); download(); }
  Scope rank_zero_first(bool local = false);
  // Skips gradient synchronisation of `module` for forward and backward inside the scope
  // (gradient accumulation); the next synchronised backward reduces what accumulated.
  template <typename Impl>
  Scope no_backward_sync(FabricModule<Impl>& module, bool enabled = true) {
    return strategy_->no_backward_sync(*module, enabled);
  }

  // Sends metrics to every logger, on global rank zero only. Tensors are detached and must
  // hold one element. step defaults to each logger's own counter.
  void log(const std::string& name, const MetricValue& value, std::optional<std::int64_t> step = std::nullopt);
  void log_dict(const std::map<std::string, MetricValue>& metrics, std::optional<std::int64_t> step = std::nullopt);
  // The first logger (UsageError if there is none) and all of them.
  Logger& logger() const;
  const std::vector<std::shared_ptr<Logger>>& loggers() const { return loggers_; }

  // Invokes hook `name` on every callback that defines it, in registration order.
  template <typename... Args>
  void call(std::string_view name, Args&&... args) {
    for (const auto& callback : callbacks_) callback.invoke(name, args...);
  }

  // Saves `state` to `path` in torch.save's format: modules as their state dicts (Python's
  // parameter names), optimizers as Python-style state dicts, plain values as they are.
  // Atomic (a crash leaves the previous file); only global rank 0 writes, all ranks wait.
  void save(const std::string& path, const State& state, const SaveFilter& filter = {});
  // Restores what `state` names from `path`: modules and optimizers in place, plain values
  // into `state`. Returns what the file held beyond that. strict: every key of `state` must
  // be in the file, and module parameter names must match exactly. Nothing is changed when
  // it throws CheckpointError.
  State load(const std::string& path, State& state, bool strict = true);
  // The whole checkpoint as plain values.
  State load(const std::string& path);
  // Loads a bare state dict file (Python's torch.save(model.state_dict()), or an optimizer's)
  // into a module or optimizer.
  void load_raw(const std::string& path, const StateValue& target, bool strict = true);

  // Seeds torch (CPU and CUDA), the C library's rand() and records the seed in
  // PL_GLOBAL_SEED so that samplers and spawned ranks agree. nullopt takes PL_GLOBAL_SEED,
  // else 0. Returns the seed used.
  static std::uint64_t seed_everything(std::optional<std::int64_t> seed = std::nullopt, bool workers = true);

  torch::Device device() const;
  int global_rank() const;
  int local_rank() const;
  int node_rank() const;
  int world_size() const;
  bool is_global_zero() const;

  Strategy& strategy() { return *strategy_; }
  Precision& precision() { return strategy_->precision(); }
  Accelerator& accelerator() { return strategy_->accelerator(); }

 private:
  template <typename T>
  struct is_fabric_module : std::false_type {};
  template <typename Impl>
  struct is_fabric_module<FabricModule<Impl>> : std::true_type {};

  template <typename Impl, typename Optimizer>
  FabricOptimizer setup_optimizer_from(const FabricModule<Impl>& module, Optimizer&& optimizer) {
    if constexpr (std::is_same_v<std::decay_t<Optimizer>, FabricOptimizer>) {
      return setup_optimizers(optimizer);  // refused with a clear error
    } else if constexpr (std::is_invocable_v<Optimizer, std::vector<torch::Tensor>>) {
      return setup_optimizers(detail::to_shared_optimizer(optimizer(module.parameters())));
    } else {
      return setup_optimizers(detail::to_shared_optimizer(std::forward<Optimizer>(optimizer)));
    }
  }

  void backward_through(const torch::Tensor& loss, torch::nn::Module* module, const BackwardOptions& options);
  void validate_launched(std::string_view method) const;
  void prepare_module(torch::nn::Module& module, bool move_to_device);
  data::DistributedSampler::Options sampler_options(const DataLoaderOptions& options) const;
  std::optional<torch::Device> batch_device(bool move_to_device) const;

  std::shared_ptr<Strategy> strategy_;
  std::vector<std::shared_ptr<Logger>> loggers_;
  std::vector<Callback> callbacks_;
  std::chrono::milliseconds timeout_;  // FabricOptions::timeout, for launcher barriers
  bool launched_ = false;
};

// Lightning's overridable run (the LightningLite style). Derive from Fabric and write a
// `run(args...)`; calling run on a Launched<YourProgram> first launches the processes the
// options ask for (as launch(fn) does: re-executing this program for the other local
// ranks, or connecting the ranks fabricd, torchrun or Slurm started), then runs yours on
// every rank and returns its result there.
//   struct Train : fabric::Fabric {
//     using Fabric::Fabric;
//     double run(int epochs) { auto [model, optimizer] = setup(...); ... return accuracy; }
//   };
//   double accuracy = fabric::Launched<Train>({.devices = 2}).run(10);
template <typename Program>
class Launched : public Program {
  static_assert(std::is_base_of_v<Fabric, Program>, "Launched<Program>: Program must derive from fabric::Fabric.");

 public:
  using Program::Program;

  template <typename... Args>
  decltype(auto) run(Args&&... args) {
    this->launch();
    return Program::run(std::forward<Args>(args)...);
  }
};

// Free-function form of Fabric::seed_everything (whose default is workers=true).
std::uint64_t seed_everything(std::optional<std::int64_t> seed = std::nullopt, bool workers = false);

}  // namespace fabric
