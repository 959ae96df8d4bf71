#include "fabric/strategies.h"

#include <torch/csrc/autograd/engine.h>
#include <torch/csrc/distributed/c10d/reducer.hpp>

#include <algorithm>
#include <map>
#include <utility>
#include <sstream>

#include "collectives/process_group.h"
#include "fabric/errors.h"
#include "strategies/subprocess_launcher.h"

namespace fabric {

using strategies::SubprocessLauncher;

struct DDPStrategy::Replica {
  std::unique_ptr<c10d::Reducer> reducer;
  std::vector<torch::Tensor> parameters;     // by the reducer's parameter index
  std::vector<std::string> parameter_names;  // the same order
  std::vector<torch::Tensor> buffers;
  bool sync = true;              // false inside no_backward_sync
  std::int64_t forwards = 0;     // synchronised training forwards so far
};

DDPStrategy::DDPStrategy(DDPOptions options) : options_(std::move(options)) {
  if (!(options_.bucket_cap_mb > 0)) {
    throw ConfigurationError("DDPOptions::bucket_cap_mb=" + std::to_string(options_.bucket_cap_mb) +
                             " is not valid: gradients are reduced in buckets of a positive size in MiB (default 25).");
  }
}

DDPStrategy::~DDPStrategy() = default;

void DDPStrategy::configure(ParallelConfig config) {
  parallel_devices_ = std::move(config.parallel_devices);
  num_nodes_ = config.num_nodes;
  environment_ = std::move(config.environment);
  environment_is_plugin_ = config.environment_is_plugin;
  if (!options_.timeout) options_.timeout = config.timeout;
  check_collective_backend(options_.process_group_backend, parallel_devices_.front());
  const int per_node = static_cast<int>(parallel_devices_.size());
  if (environment_->creates_processes_externally()) {
    global_rank_ = environment_->global_rank();
    local_rank_ = environment_->local_rank();
    node_rank_ = environment_->node_rank();
    world_size_ = environment_->world_size();
    if (world_size_ != per_node * num_nodes_) {
      throw ConfigurationError("The " + environment_->name() + " launcher started " + std::to_string(world_size_) +
                               " processes, but Fabric was configured for devices=" + std::to_string(per_node) +
                               " x num_nodes=" + std::to_string(num_nodes_) +
                               ". Make them agree (or leave devices=\"auto\").");
    }
    if (local_rank_ >= per_node) {
      throw ConfigurationError("local rank " + std::to_string(local_rank_) + " has no device: devices=" +
                               std::to_string(per_node) + " per node.");
    }
  } else {  // this process will launch the others and be local rank 0
    node_rank_ = environment_->node_rank();
    world_size_ = per_node * num_nodes_;
    global_rank_ = node_rank_ * per_node;
  }
}

bool DDPStrategy::requires_launch() const { return !environment_->creates_processes_externally(); }

torch::Device DDPStrategy::root_device() const { return parallel_devices_.at(static_cast<size_t>(local_rank_)); }

void DDPStrategy::launch() {
  if (!requires_launch() || launcher_) return;
  launcher_ = std::make_unique<SubprocessLauncher>(static_cast<int>(parallel_devices_.size()), num_nodes_, node_rank_);
  // Now this process's own rank variables are set; a user's environment reads them itself.
  if (!environment_is_plugin_) environment_ = detect_environment();
}

void DDPStrategy::setup_environment() {
  Strategy::setup_environment();
  if (!collective_) {
    collective_ = make_collective(*environment_, root_device(),
                                  {.timeout = *options_.timeout, .backend = options_.process_group_backend});
  }
}

Collective& DDPStrategy::collective() {
  if (!collective_) {
    throw UsageError("The ddp strategy has not connected its processes yet: call fabric.launch() first.");
  }
  return *collective_;
}

void DDPStrategy::broadcast_from_rank_zero(torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  for (auto& param : module.parameters()) {
    torch::Tensor data = param.detach();
    collective().broadcast(data, 0);
  }
  for (auto& buffer : module.buffers()) {
    torch::Tensor data = buffer.detach();
    collective().broadcast(data, 0);
  }
}

void DDPStrategy::setup_module(torch::nn::Module& module) {
  auto replica = std::make_unique<Replica>();
  broadcast_from_rank_zero(module);
  replica->buffers = module.buffers();
  std::unordered_map<size_t, std::string> names;
  for (const auto& item : module.named_parameters()) {
    if (!item.value().requires_grad()) continue;
    names[replica->parameters.size()] = item.key();
    replica->parameter_names.push_back(item.key());
    replica->parameters.push_back(item.value());
  }
  if (!replica->parameters.empty()) {
    const auto& params = replica->parameters;
    auto process_group = dynamic_cast<collectives::HasProcessGroup&>(collective()).process_group();
    const auto bucket_cap = static_cast<std::int64_t>(options_.bucket_cap_mb * 1024 * 1024);
    // As torch.nn.parallel.DistributedDataParallel: a small first bucket, then bucket_cap,
    // assigned in parameter order and reversed, so the last parameters (whose gradients are
    // ready first in backward) fill the first bucket.
    auto [buckets, limits] = c10d::compute_bucket_assignment_by_size(
        params, {static_cast<size_t>(c10d::kDefaultFirstBucketBytes), static_cast<size_t>(bucket_cap)},
        std::vector<bool>(params.size(), false));
    std::reverse(buckets.begin(), buckets.end());
    std::reverse(limits.begin(), limits.end());
    replica->reducer = std::make_unique<c10d::Reducer>(
        params, buckets, process_group, std::vector<bool>(params.size(), false), bucket_cap,
        options_.find_unused_parameters, options_.gradient_as_bucket_view, names,
        /*first_bucket_bytes_cap=*/c10d::kDefaultFirstBucketBytes, /*skip_all_reduce_unused_params=*/false,
        /*use_python_reducer=*/false, std::vector<std::int64_t>(limits.begin(), limits.end()));
    if (options_.static_graph) replica->reducer->set_static_graph();
  }
  replicas_[&module] = std::move(replica);
}

DDPStrategy::Replica& DDPStrategy::replica_of(const torch::nn::Module& module) const {
  auto found = replicas_.find(&module);
  if (found == replicas_.end()) {
    throw UsageError("This module was not set up with this Fabric's ddp strategy: pass it to fabric.setup first.");
  }
  return *found->second;
}

std::vector<std::vector<std::string>> DDPStrategy::buckets(const torch::nn::Module& module) const {
  const Replica& replica = replica_of(module);
  std::vector<std::vector<std::string>> named;
  if (!replica.reducer) return named;
  for (const auto& bucket : replica.reducer->get_grad_buckets(/*return_zero_tensors=*/true)) {
    auto& names = named.emplace_back();
    for (const auto& param : bucket.getParameters()) {
      for (std::size_t i = 0; i < replica.parameters.size(); ++i) {
        if (replica.parameters[i].is_same(param)) names.push_back(replica.parameter_names[i]);
      }
    }
  }
  return named;
}

namespace {

// The Reducer reports parameters that got no gradient when the next step begins, by index
// ("Parameter indices which did not receive grad for rank 0: 2 3"); we name them.
[[noreturn]] void rethrow_reducer_error(const c10::Error& error, const std::vector<std::string>& names) {
  const std::string what = error.what_without_backtrace();
  const std::string marker = "did not receive grad for rank ";
  const auto at = what.find(marker);
  if (at == std::string::npos) throw UsageError(std::string("ddp: ") + what);
  std::istringstream indices(what.substr(what.find(':', at) + 1, what.find('\n', at) - what.find(':', at) - 1));
  std::string unused;
  for (std::size_t index; indices >> index;) {
    unused += (unused.empty() ? "" : ", ") + (index < names.size() ? names[index] : "#" + std::to_string(index));
  }
  throw UsageError("ddp: these parameters received no gradient in the previous step, so their gradients could not be "
                   "averaged across ranks: " + unused + ". Make every parameter take part in the loss, or create "
                   "Fabric with strategy=\"ddp_find_unused_parameters_true\" (or a DDPStrategy with "
                   "find_unused_parameters or static_graph) if some legitimately do not.");
}

}  // namespace

namespace {

// Replaces every rank's `tensors` with rank zero's, one broadcast per dtype (as DDP's
// _sync_buffers coalesces them) rather than one per tensor.
void broadcast_coalesced(Collective& collective, const std::vector<torch::Tensor>& tensors) {
  std::map<torch::ScalarType, std::vector<torch::Tensor>> by_dtype;
  for (const auto& tensor : tensors) by_dtype[tensor.scalar_type()].push_back(tensor.detach());
  for (auto& [dtype, group] : by_dtype) {
    if (group.size() == 1) {
      collective.broadcast(group.front(), 0);
      continue;
    }
    std::vector<torch::Tensor> flat_parts;
    for (const auto& tensor : group) flat_parts.push_back(tensor.reshape({-1}));
    torch::Tensor flat = torch::cat(flat_parts);
    collective.broadcast(flat, 0);
    std::int64_t offset = 0;
    for (auto& tensor : group) {
      tensor.copy_(flat.narrow(0, offset, tensor.numel()).view_as(tensor));
      offset += tensor.numel();
    }
  }
}

}  // namespace

void DDPStrategy::before_forward(torch::nn::Module& module) {
  Replica& replica = replica_of(module);
  if (!replica.sync || !torch::GradMode::is_enabled()) return;
  if (options_.broadcast_buffers && !replica.buffers.empty()) {  // rank zero's running statistics
    torch::NoGradGuard no_grad;
    broadcast_coalesced(collective(), replica.buffers);
  }
  if (replica.reducer) {
    ++replica.forwards;
    try {
      // As DDP's forward: after the first step, re-bucket by the order gradients actually
      // became ready; every step, check that the previous one reduced all parameters.
      replica.reducer->rebuild_buckets();
      replica.reducer->prepare_for_forward();
    } catch (const c10::Error& error) {
      rethrow_reducer_error(error, replica.parameter_names);
    }
  }
}

void DDPStrategy::after_forward(torch::nn::Module& module, const std::vector<torch::Tensor>& outputs) {
  Replica& replica = replica_of(module);
  if (!replica.sync || !torch::GradMode::is_enabled() || !replica.reducer) return;
  try {
    const bool search_unused = options_.find_unused_parameters && !options_.static_graph;
    replica.reducer->prepare_for_backward(search_unused ? outputs : std::vector<torch::Tensor>{});
  } catch (const c10::Error& error) {
    rethrow_reducer_error(error, replica.parameter_names);
  }
  if (options_.static_graph && replica.forwards == 1) {
    // In its first step a static graph's reducer only counts which gradients arrive; it
    // reduces them all once backward has finished (PyTorch's DDPSink queues the same call).
    c10d::Reducer* reducer = replica.reducer.get();
    auto queued = std::make_shared<bool>(false);
    for (const auto& output : outputs) {
      if (!output.requires_grad()) continue;
      output.register_hook([reducer, queued](const torch::Tensor&) {
        if (std::exchange(*queued, true)) return;
        torch::autograd::Engine::get_default_engine().queue_callback([reducer] { reducer->delay_all_reduce(); });
      });
    }
  }
}

Scope DDPStrategy::no_backward_sync(torch::nn::Module& module, bool enabled) {
  if (!enabled) return {};
  Replica& replica = replica_of(module);
  replica.sync = false;
  return Scope([&replica] { replica.sync = true; });
}

void DDPStrategy::barrier(std::string_view) { collective().barrier(); }
std::string DDPStrategy::process_group_backend() const {
  return collective_ ? std::string(collective_->backend()) : options_.process_group_backend;
}

void DDPStrategy::broadcast(torch::Tensor& tensor, int src) { collective().broadcast(tensor, src); }
void DDPStrategy::all_reduce(torch::Tensor& tensor, ReduceOp op) { collective().all_reduce(tensor, op); }
std::vector<torch::Tensor> DDPStrategy::all_gather(const torch::Tensor& tensor) {
  return collective().all_gather(tensor);
}

}  // namespace fabric
