#include "strategies/ddp.h"

#include <torch/csrc/distributed/c10d/reducer.hpp>

#include <algorithm>
#include <sstream>

#include "collectives/process_group.h"
#include "fabric/errors.h"
#include "strategies/subprocess_launcher.h"

namespace fabric::strategies {

struct DDPStrategy::Replica {
  std::unique_ptr<c10d::Reducer> reducer;
  std::vector<std::string> parameter_names;  // by the reducer's parameter index
  std::vector<torch::Tensor> buffers;
  bool sync = true;  // false inside no_backward_sync
};

DDPStrategy::DDPStrategy(std::vector<torch::Device> parallel_devices, int num_nodes,
                         std::unique_ptr<ClusterEnvironment> environment, std::shared_ptr<Accelerator> accelerator,
                         std::unique_ptr<Precision> precision, DDPOptions options)
    : Strategy(std::move(accelerator), std::move(precision)),
      parallel_devices_(std::move(parallel_devices)),
      num_nodes_(num_nodes),
      environment_(std::move(environment)),
      options_(options) {
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

DDPStrategy::~DDPStrategy() = default;

torch::Device DDPStrategy::root_device() const { return parallel_devices_.at(static_cast<size_t>(local_rank_)); }

void DDPStrategy::launch() {
  if (!requires_launch() || launcher_) return;
  launcher_ = std::make_unique<SubprocessLauncher>(static_cast<int>(parallel_devices_.size()), num_nodes_, node_rank_);
  environment_ = detect_environment();  // now this process's own rank variables are set
}

void DDPStrategy::setup_environment() {
  Strategy::setup_environment();
  if (!collective_) {
    collective_ = make_collective(*environment_, root_device(), {.timeout = options_.timeout});
  }
}

Collective& DDPStrategy::collective() {
  if (!collective_) {
    throw UsageError("The ddp strategy has not connected its processes yet: call fabric.launch() first.");
  }
  return *collective_;
}

void DDPStrategy::setup_module(torch::nn::Module& module) {
  auto replica = std::make_unique<Replica>();
  {
    // Every rank starts from rank zero's parameters and buffers.
    torch::NoGradGuard no_grad;
    for (auto& param : module.parameters()) {
      torch::Tensor data = param.detach();
      collective().broadcast(data, 0);
    }
    for (auto& buffer : module.buffers()) {
      torch::Tensor data = buffer.detach();
      collective().broadcast(data, 0);
      replica->buffers.push_back(buffer);
    }
  }
  std::vector<torch::Tensor> params;
  std::unordered_map<size_t, std::string> names;
  for (const auto& item : module.named_parameters()) {
    if (!item.value().requires_grad()) continue;
    names[params.size()] = item.key();
    replica->parameter_names.push_back(item.key());
    params.push_back(item.value());
  }
  if (!params.empty()) {
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
        options_.find_unused_parameters, /*gradient_as_bucket_view=*/false, names,
        /*first_bucket_bytes_cap=*/c10d::kDefaultFirstBucketBytes, /*skip_all_reduce_unused_params=*/false,
        /*use_python_reducer=*/false, std::vector<std::int64_t>(limits.begin(), limits.end()));
  }
  replicas_[&module] = std::move(replica);
}

DDPStrategy::Replica& DDPStrategy::replica_of(torch::nn::Module& module) {
  auto found = replicas_.find(&module);
  if (found == replicas_.end()) {
    throw UsageError("This module was not set up with this Fabric's ddp strategy: pass it to fabric.setup first.");
  }
  return *found->second;
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
                   "Fabric with strategy=\"ddp_find_unused_parameters_true\" if some legitimately do not.");
}

}  // namespace

void DDPStrategy::before_forward(torch::nn::Module& module) {
  Replica& replica = replica_of(module);
  if (!replica.sync || !torch::GradMode::is_enabled()) return;
  torch::NoGradGuard no_grad;
  for (auto& buffer : replica.buffers) {  // rank zero's running statistics, as broadcast_buffers=True
    torch::Tensor data = buffer.detach();
    collective().broadcast(data, 0);
  }
  if (replica.reducer) {
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
    replica.reducer->prepare_for_backward(options_.find_unused_parameters ? outputs : std::vector<torch::Tensor>{});
  } catch (const c10::Error& error) {
    rethrow_reducer_error(error, replica.parameter_names);
  }
}

Scope DDPStrategy::no_backward_sync(torch::nn::Module& module, bool enabled) {
  if (!enabled) return {};
  Replica& replica = replica_of(module);
  replica.sync = false;
  return Scope([&replica] { replica.sync = true; });
}

void DDPStrategy::barrier(std::string_view) { collective().barrier(); }
void DDPStrategy::broadcast(torch::Tensor& tensor, int src) { collective().broadcast(tensor, src); }
void DDPStrategy::all_reduce(torch::Tensor& tensor, ReduceOp op) { collective().all_reduce(tensor, op); }
std::vector<torch::Tensor> DDPStrategy::all_gather(const torch::Tensor& tensor) {
  return collective().all_gather(tensor);
}

}  // namespace fabric::strategies
