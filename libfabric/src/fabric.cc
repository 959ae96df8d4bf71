#include "fabric/fabric.h"

#include <torch/nn/utils/clip_grad.h>

#include <cstring>
#include <exception>

#include "backward_flag.h"
#include "log/log.h"
#include "connector.h"
#include "environments/launcher_services.h"
#include "fabric/worker/standby.h"
#include "utilities/empty_init.h"
#include "utilities/env.h"
#include "utilities/optimizer_state.h"

namespace fabric {

Fabric::Fabric(FabricOptions options)
    : strategy_(connector::resolve(options)),
      loggers_(std::move(options.loggers)),
      callbacks_(std::move(options.callbacks)),
      timeout_(options.timeout) {
  // Also what links the warm-standby wait into every Fabric program (fabric/worker/standby.h).
  if (worker::started_as_standby()) {
    log::debug("started as a warm standby of fabricd (or forked from its zygote), then given this rank");
  }
  // A DDPStrategy given with its own timeout bounds the launcher's barriers too.
  if (const auto* parallel = dynamic_cast<const ParallelStrategy*>(strategy_.get())) timeout_ = parallel->timeout();
  for (const auto& logger : loggers_) {
    if (!logger) throw ConfigurationError("FabricOptions::loggers holds a null logger; pass fabric::loggers::csv(...) etc.");
  }
}

Fabric::~Fabric() {
  if (!strategy_ || !is_global_zero()) return;  // moved from, or not the rank that logs
  const char* status = std::uncaught_exceptions() > 0 ? "failed" : "success";
  for (const auto& logger : loggers_) {
    try {
      logger->finalize(status);
    } catch (const std::exception& error) {  // a destructor must not throw; say what was lost
      log::warn(std::string("Finalizing logger '") + logger->name() + "' failed: " + error.what());
    }
  }
}
Fabric::Fabric(Fabric&&) noexcept = default;
Fabric& Fabric::operator=(Fabric&&) noexcept = default;

void Fabric::launch() {
  if (launched_) return;  // a second launch() does nothing, as in Lightning
  launched_ = true;
  strategy_->launch();
  strategy_->setup_environment();
  log::set_rank(global_rank());
}

void Fabric::validate_launched(std::string_view method) const {
  if (dynamic_cast<const ParallelStrategy*>(strategy_.get()) != nullptr && !launched_) {
    throw UsageError("To use Fabric with more than one device, call fabric.launch() before fabric." +
                     std::string(method) + "(), or start the program with fabricd run / torchrun.");
  }
}

void Fabric::prepare_module(torch::nn::Module& module, bool move_to_device) {
  validate_launched("setup");
  strategy_->precision().convert_module(module);
  if (move_to_device) {
    strategy_->accelerator().setup_device(device());
    strategy_->module_to_device(module);
  }
  strategy_->setup_module(module);
}

FabricOptimizer Fabric::setup_optimizers(std::shared_ptr<torch::optim::Optimizer> optimizer) {
  validate_launched("setup_optimizers");
  if (!optimizer) throw UsageError("setup_optimizers needs an optimizer, got a null pointer.");
  for (const auto& group : optimizer->param_groups()) {
    for (const auto& param : group.params()) {
      if (param.device() != device()) {
        throw UsageError("The optimizer has parameters on " + param.device().str() + " but Fabric trains on " +
                         device().str() + ". Set up the module first (setup_module, or setup(module, "
                                          "optimizer factory)) and create the optimizer from its parameters.");
      }
    }
  }
  utilities::move_optimizer_state(*optimizer, device());
  strategy_->setup_optimizer(*optimizer);
  return FabricOptimizer(std::move(optimizer), strategy_);
}

FabricOptimizer Fabric::setup_optimizers(const FabricOptimizer&) {
  throw UsageError("An optimizer should be passed only once to the setup method: this one is already a "
                   "FabricOptimizer. Pass the original optimizer (fabric_optimizer.shared()) to set it up again.");
}

void Fabric::backward_through(const torch::Tensor& loss, torch::nn::Module* module, const BackwardOptions& options) {
  detail::FabricBackwardMark mark;
  // The ranks meet here (the gradients' all-reduce): the launcher times each one's arrival.
  if (auto* launcher = strategy_->launcher()) launcher->synchronizing();
  // Under DDP, backward waits for the peers' gradients: a wait, not a hang.
  auto busy = environments::busy(strategy_->launcher(), "backward");
  strategy_->backward(loss, module, options);
}

std::optional<double> Fabric::clip_gradients(torch::nn::Module& module, FabricOptimizer& optimizer,
                                             const ClipOptions& options) {
  if (options.clip_val && options.max_norm) {
    throw UsageError("clip_gradients: only one of clip_val or max_norm can be set, as this chooses the clipping "
                     "algorithm (by value or by norm).");
  }
  if (!options.clip_val && !options.max_norm) {
    throw UsageError("clip_gradients: set either clip_val (clip by value) or max_norm (clip by total norm).");
  }
  strategy_->precision().unscale_gradients(optimizer.optimizer());
  if (options.clip_val) {
    std::vector<torch::Tensor> params;
    for (auto& group : optimizer->param_groups()) {
      params.insert(params.end(), group.params().begin(), group.params().end());
    }
    torch::nn::utils::clip_grad_value_(params, *options.clip_val);
    return std::nullopt;
  }
  try {
    return strategy_->clip_gradients_norm(module, optimizer.optimizer(), *options.max_norm, options.norm_type,
                                          options.error_if_nonfinite);
  } catch (const c10::Error& error) {
    throw Error(std::string("clip_gradients: ") + error.what_without_backtrace());
  }
}

Scope Fabric::autocast() { return strategy_->precision().forward_context(); }

Scope Fabric::init_tensor() { return strategy_->precision().init_context(); }

Scope Fabric::init_module(bool empty_init) {
  validate_launched("init_module");
  if (!empty_init) return strategy_->module_init_context();
  auto context = std::make_shared<Scope>(strategy_->module_init_context());
  auto skip = std::make_shared<Scope>(utilities::skip_random_initialization());
  return Scope([context, skip]() mutable {  // exits in reverse order of entry
    skip.reset();
    context.reset();
  });
}

double MetricValue::to_double(const std::string& name) const {
  if (const auto* number = std::get_if<double>(&value_)) return *number;
  const torch::Tensor& tensor = std::get<torch::Tensor>(value_);
  if (tensor.numel() != 1) {
    throw UsageError("fabric.log(\"" + name + "\", ...) got a tensor of " + std::to_string(tensor.numel()) +
                     " elements; log a single number (reduce it first, e.g. with .mean()).");
  }
  return tensor.detach().item<double>();
}

void Fabric::log(const std::string& name, const MetricValue& value, std::optional<std::int64_t> step) {
  log_dict({{name, value}}, step);
}

void Fabric::log_dict(const std::map<std::string, MetricValue>& metrics, std::optional<std::int64_t> step) {
  std::map<std::string, double> scalars;
  for (const auto& [name, value] : metrics) scalars[name] = value.to_double(name);  // validates on every rank
  // Every rank's latest values go to its launcher (the status page plots rank 0's).
  if (auto* launcher = strategy_->launcher()) launcher->metrics(scalars);
  if (!is_global_zero()) return;
  for (const auto& logger : loggers_) logger->log_metrics(scalars, step);
}

Logger& Fabric::logger() const {
  if (loggers_.empty()) throw UsageError("fabric.logger(): no logger was given; pass FabricOptions::loggers.");
  return *loggers_.front();
}

void Fabric::barrier(std::string_view name) {
  validate_launched("barrier");
  // Under fabricd a barrier is the launcher's: a timeout there names the missing ranks.
  if (auto* launcher = strategy_->launcher(); launcher && world_size() > 1) {
    launcher->barrier(std::string(name), timeout_);
    return;
  }
  auto busy = environments::busy(strategy_->launcher(), "barrier");
  strategy_->barrier(name);
}

// The collectives take tensors on this process's device (NCCL refuses others), as
// Lightning's convert_to_tensors(data, device=self.device) makes them.
torch::Tensor Fabric::all_reduce(torch::Tensor tensor, std::string_view reduce_op) {
  validate_launched("all_reduce");
  tensor = tensor.to(device());
  auto busy = environments::busy(strategy_->launcher(), "all_reduce");
  strategy_->all_reduce(tensor, parse_reduce_op(reduce_op));
  return tensor;
}

std::vector<torch::Tensor> Fabric::all_gather(const torch::Tensor& tensor) {
  validate_launched("all_gather");
  auto busy = environments::busy(strategy_->launcher(), "all_gather");
  return strategy_->all_gather(tensor.to(device()));
}

torch::Tensor Fabric::broadcast(torch::Tensor tensor, int src) {
  validate_launched("broadcast");
  auto busy = environments::busy(strategy_->launcher(), "broadcast");
  tensor = tensor.to(device());
  strategy_->broadcast(tensor, src);
  return tensor;
}

std::string Fabric::broadcast(const std::string& value, int src) {
  torch::Tensor size = broadcast(torch::tensor(static_cast<std::int64_t>(value.size())), src);
  torch::Tensor bytes = torch::zeros({size.item<std::int64_t>()}, torch::kUInt8);
  if (global_rank() == src) std::memcpy(bytes.data_ptr(), value.data(), value.size());
  bytes = broadcast(bytes, src).cpu();
  return std::string(static_cast<const char*>(bytes.data_ptr()), static_cast<std::size_t>(bytes.numel()));
}

Scope Fabric::rank_zero_first(bool local) {
  const bool first = (local ? local_rank() : global_rank()) == 0;
  // Every rank takes part in exactly one barrier before the others run the block (rank
  // zero's at its end), then one more, which all ranks leave together.
  if (!first) barrier("rank_zero_first");
  return Scope([this, first] {
    if (first) barrier("rank_zero_first");
    barrier("rank_zero_first.exit");
  });
}

data::DistributedSampler::Options Fabric::sampler_options(const DataLoaderOptions& options) const {
  data::DistributedSampler::Options sampler;
  if (auto sharding = strategy_->sharding(); sharding && options.use_distributed_sampler) {
    sampler.num_replicas = sharding->num_replicas;
    sampler.rank = sharding->rank;
  }
  sampler.shuffle = options.shuffle;
  sampler.seed = static_cast<std::uint64_t>(env::get_int("PL_GLOBAL_SEED").value_or(0));
  return sampler;
}

std::optional<torch::Device> Fabric::batch_device(bool move_to_device) const {
  if (!move_to_device) return std::nullopt;
  return device();
}

torch::Device Fabric::device() const { return strategy_->root_device(); }
int Fabric::global_rank() const { return strategy_->global_rank(); }
int Fabric::local_rank() const { return strategy_->local_rank(); }
int Fabric::node_rank() const { return strategy_->node_rank(); }
int Fabric::world_size() const { return strategy_->world_size(); }
bool Fabric::is_global_zero() const { return strategy_->is_global_zero(); }

}  // namespace fabric
