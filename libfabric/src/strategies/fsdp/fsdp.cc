// FSDPStrategy: what it does to a module (units), around forward and backward (the compute
// window) and to the optimizer's view of the parameters (the local shard).
#include <torch/autograd.h>

#include <cmath>
#include <limits>
#include <unordered_map>
#include <unordered_set>

#include "fabric/errors.h"
#include "fabric/grad_scaler.h"
#include "fabric/strategies.h"
#include "strategies/fsdp/sharded_module.h"

namespace fabric {

using strategies::FlatMember;
using strategies::FlatUnit;
using strategies::ShardedModule;

ShardingStrategy parse_sharding_strategy(std::string_view name) {
  if (name == "FULL_SHARD") return ShardingStrategy::kFullShard;
  if (name == "SHARD_GRAD_OP") return ShardingStrategy::kShardGradOp;
  if (name == "NO_SHARD") return ShardingStrategy::kNoShard;
  throw ConfigurationError("sharding_strategy=\"" + std::string(name) +
                           "\" is not one Fabric for C++ has: use \"FULL_SHARD\", \"SHARD_GRAD_OP\" or \"NO_SHARD\".");
}

std::string_view to_string(ShardingStrategy strategy) {
  switch (strategy) {
    case ShardingStrategy::kFullShard: return "FULL_SHARD";
    case ShardingStrategy::kShardGradOp: return "SHARD_GRAD_OP";
    case ShardingStrategy::kNoShard: return "NO_SHARD";
  }
  return "?";
}

FSDPStrategy::FSDPStrategy(FSDPOptions options)
    : DDPStrategy(DDPOptions{.process_group_backend = options.process_group_backend, .timeout = options.timeout}),
      fsdp_options_(std::move(options)) {
  if (fsdp_options_.state_dict_type != "sharded" && fsdp_options_.state_dict_type != "full") {
    throw ConfigurationError("FSDPOptions::state_dict_type=\"" + fsdp_options_.state_dict_type +
                             "\" is not valid: use \"sharded\" (a folder, one file per rank) or \"full\" (one file).");
  }
  if (fsdp_options_.auto_wrap_min_num_params < 0) {
    throw ConfigurationError("FSDPOptions::auto_wrap_min_num_params must be 0 (off) or positive.");
  }
}

FSDPStrategy::~FSDPStrategy() = default;

namespace {

using NamedParameters = std::vector<std::pair<std::string, torch::Tensor>>;

// Splits `module`'s parameters into units by the auto-wrap policy, innermost first (a
// wrapped module inside a wrapped module is a unit of its own), the root's remainder last.
class UnitPlanner {
 public:
  explicit UnitPlanner(const FSDPOptions& options) : options_(options) {}

  std::vector<std::pair<std::string, NamedParameters>> plan(torch::nn::Module& root) {
    for (const auto& child : root.named_children()) visit(*child.value(), child.key());
    NamedParameters rest = unassigned(root, "");
    if (!rest.empty()) units_.emplace_back("", std::move(rest));
    return std::move(units_);
  }

 private:
  void visit(torch::nn::Module& module, const std::string& path) {
    for (const auto& child : module.named_children()) visit(*child.value(), path + "." + child.key());
    NamedParameters candidates = unassigned(module, path + ".");
    if (candidates.empty()) return;
    const bool by_type = options_.auto_wrap_module_types.count(module.name()) > 0;
    std::int64_t numel = 0;
    for (const auto& [name, param] : candidates) numel += param.numel();
    const bool by_size = options_.auto_wrap_min_num_params > 0 && numel >= options_.auto_wrap_min_num_params;
    if (!by_type && !by_size) return;
    for (const auto& [name, param] : candidates) assigned_.insert(param.unsafeGetTensorImpl());
    units_.emplace_back(path, std::move(candidates));
  }

  // The parameters under `module` no unit has yet, each once (a tied parameter goes to the
  // first unit that has it), named from the root.
  NamedParameters unassigned(torch::nn::Module& module, const std::string& prefix) {
    NamedParameters result;
    std::unordered_set<const c10::TensorImpl*> seen;
    for (const auto& item : module.named_parameters()) {
      const c10::TensorImpl* impl = item.value().unsafeGetTensorImpl();
      if (assigned_.count(impl) || !seen.insert(impl).second) continue;
      result.emplace_back(prefix + item.key(), item.value());
    }
    if (prefix.empty()) {
      for (const auto& [name, param] : result) assigned_.insert(param.unsafeGetTensorImpl());
    }
    return result;
  }

  const FSDPOptions& options_;
  std::unordered_set<const c10::TensorImpl*> assigned_;
  std::vector<std::pair<std::string, NamedParameters>> units_;
};

std::string unit_label(const std::string& module_name) {
  return module_name.empty() ? "the root module's unit" : "unit '" + module_name + "'";
}

// A unit is one flat buffer: one dtype and one device for all of its parameters.
void check_uniform(const std::string& module_name, const NamedParameters& params) {
  const auto& [first_name, first] = params.front();
  for (const auto& [name, param] : params) {
    if (param.scalar_type() != first.scalar_type() || param.device() != first.device()) {
      throw ConfigurationError("fsdp: " + unit_label(module_name) + " holds '" + first_name + "' (" +
                               std::string(c10::toString(first.scalar_type())) + ", " + first.device().str() +
                               ") and '" + name + "' (" + std::string(c10::toString(param.scalar_type())) + ", " +
                               param.device().str() +
                               "): a unit is flattened into one buffer, so give its parameters one dtype and device, "
                               "or wrap them in separate units (FSDPOptions::auto_wrap_module_types).");
    }
  }
}

// Turns the gather-on-use mode on for a scope and restores what was there before.
class GatherOnUse {
 public:
  GatherOnUse() : previous_(strategies::gather_on_use_enabled()) { strategies::set_gather_on_use(true); }
  ~GatherOnUse() { strategies::set_gather_on_use(previous_); }
  GatherOnUse(const GatherOnUse&) = delete;
  GatherOnUse& operator=(const GatherOnUse&) = delete;

 private:
  bool previous_;
};

bool holds_any(const ShardedModule& state, torch::optim::Optimizer& optimizer) {
  for (const auto& group : optimizer.param_groups()) {
    for (const auto& param : group.params()) {
      if (state.holds(param)) return true;
    }
  }
  return false;
}

// Tied parameters (one tensor under two names) would be one unit's member under its first
// name and a stranger under the second, in checkpoints as in the units.
void reject_tied_parameters(torch::nn::Module& module) {
  std::unordered_map<const c10::TensorImpl*, std::string> first_name;
  for (const auto& item : module.named_parameters()) {
    auto [found, inserted] = first_name.emplace(item.value().unsafeGetTensorImpl(), item.key());
    if (!inserted) {
      throw ConfigurationError("fsdp: '" + found->second + "' and '" + item.key() +
                               "' are one tensor (tied parameters), which Fabric for C++'s fsdp does not shard yet. "
                               "Untie them, or train this model with strategy=\"ddp\".");
    }
  }
}

}  // namespace

void FSDPStrategy::setup_module(torch::nn::Module& module) {
  if (GradScaler* scaler = precision().grad_scaler()) shard_grad_scaler(*scaler);
  if (modules_.count(&module)) {
    throw UsageError("fsdp: this module is already set up; pass each model to setup_module once.");
  }
  reject_tied_parameters(module);
  broadcast_from_rank_zero(module);
  const bool sharded = fsdp_options_.sharding_strategy != ShardingStrategy::kNoShard;
  std::vector<std::unique_ptr<FlatUnit>> units;
  for (auto& [module_name, params] : UnitPlanner(fsdp_options_).plan(module)) {
    check_uniform(module_name, params);
    std::vector<FlatMember> members;
    for (auto& [name, param] : params) members.push_back(FlatMember{.name = name, .param = param});
    units.push_back(std::make_unique<FlatUnit>(module_name, std::move(members), global_rank(), world_size(), sharded));
  }
  auto state = std::make_unique<ShardedModule>(fsdp_options_.sharding_strategy, collective());
  state->adopt(std::move(units));
  modules_[&module] = std::move(state);
}

void FSDPStrategy::shard_grad_scaler(GradScaler& scaler) {
  if (fsdp_options_.sharding_strategy == ShardingStrategy::kNoShard) return;  // every rank has every gradient
  scaler.set_found_inf_reduction([this](torch::Tensor& found_inf) { collective().all_reduce(found_inf, ReduceOp::kSum); });
}

void FSDPStrategy::setup_optimizer(torch::optim::Optimizer& optimizer) {
  const auto sharded = [this](const torch::Tensor& param) {
    return std::any_of(modules_.begin(), modules_.end(), [&](const auto& entry) { return entry.second->holds(param); });
  };
  for (const auto& group : optimizer.param_groups()) {
    for (const auto& param : group.params()) {
      if (!sharded(param)) {
        throw UsageError("fsdp: the optimizer holds a parameter of no module set up with this strategy. The "
                         "optimizer of a sharded model steps the shards that setup_module makes, so call "
                         "setup_module(model) first, then pass the optimizer of model->parameters() to "
                         "setup_optimizers.");
      }
    }
  }
  if (!optimizer.state().empty()) {
    throw UsageError("fsdp: the optimizer already has state, kept for the full parameters; it would not fit their "
                     "shards. Create the optimizer after setup_module and before its first step.");
  }
}

ShardedModule& FSDPStrategy::sharded_of(const torch::nn::Module& module) const {
  auto found = modules_.find(&module);
  if (found == modules_.end()) {
    throw UsageError("This module was not set up with this Fabric's fsdp strategy: pass it to fabric.setup first.");
  }
  return *found->second;
}

ShardedModule* FSDPStrategy::sharded(const torch::nn::Module& module) const {
  auto found = modules_.find(&module);
  return found == modules_.end() ? nullptr : found->second.get();
}

std::vector<std::vector<std::string>> FSDPStrategy::units(const torch::nn::Module& module) const {
  std::vector<std::vector<std::string>> names;
  for (const auto& unit : sharded_of(module).units()) {
    auto& unit_names = names.emplace_back();
    for (const auto& member : unit->members()) unit_names.push_back(member.name);
  }
  return names;
}

void FSDPStrategy::before_forward(torch::nn::Module& module) {
  ShardedModule& state = sharded_of(module);
  forwards_.push_back({&state, state.computing(), strategies::gather_on_use_enabled()});
  state.enter_compute();
  strategies::set_gather_on_use(true);
}

FSDPStrategy::OpenForward FSDPStrategy::end_forward(torch::nn::Module& module) {
  ShardedModule& state = sharded_of(module);
  if (forwards_.empty() || forwards_.back().state != &state) {
    throw UsageError("fsdp: forwards of set-up modules must end in the reverse order they began.");
  }
  const OpenForward forward = forwards_.back();
  forwards_.pop_back();
  strategies::set_gather_on_use(forward.gathering_before);  // an outer module's forward may go on
  return forward;
}

void FSDPStrategy::after_forward(torch::nn::Module& module, const std::vector<torch::Tensor>& outputs) {
  const OpenForward forward = end_forward(module);
  const bool backward_follows = torch::GradMode::is_enabled() &&
                                std::any_of(outputs.begin(), outputs.end(), [](const auto& t) { return t.requires_grad(); });
  if (!backward_follows && !forward.was_open) {
    forward.state->enter_optimizer();  // evaluation: no backward will end the window
  } else if (forward.state->strategy() == ShardingStrategy::kFullShard) {
    forward.state->release_all();  // reshard after forward; backward gathers each unit again
  }
}

void FSDPStrategy::forward_failed(torch::nn::Module& module) {
  const OpenForward forward = end_forward(module);
  if (!forward.was_open) forward.state->enter_optimizer();
}

void FSDPStrategy::finish_compute(ShardedModule& sharded) {
  sharded.finish_backward();
  sharded.enter_optimizer();
}

void FSDPStrategy::backward(const torch::Tensor& loss, torch::nn::Module*, const BackwardOptions& options) {
  {
    GatherOnUse gather;
    precision().backward(loss, options);
  }
  // Only the windows this backward went through close: another model's forward (a GAN's
  // generator, before the discriminator's backward) waits for its own.
  for (auto& [module, state] : modules_) {
    if (state->computing() && state->backward_reached()) finish_compute(*state);
  }
}

StepOutcome FSDPStrategy::optimizer_step(torch::optim::Optimizer& optimizer, const LossClosure& closure) {
  // A forward without a backward since the last step left its window open; the optimizer
  // must see the shards of the modules it steps.
  for (auto& [module, state] : modules_) {
    if (holds_any(*state, optimizer)) state->enter_optimizer();
  }
  return precision().optimizer_step(optimizer, closure);
}

void FSDPStrategy::before_zero_grad(torch::optim::Optimizer& optimizer) {
  for (auto& [module, state] : modules_) {
    if (holds_any(*state, optimizer)) state->drop_held_gradients();
  }
}

Scope FSDPStrategy::no_backward_sync(torch::nn::Module& module, bool enabled) {
  if (!enabled) return {};
  ShardedModule& state = sharded_of(module);
  state.sync = false;
  return Scope([&state] { state.sync = true; });
}

double FSDPStrategy::clip_gradients_norm(torch::nn::Module& module, torch::optim::Optimizer& optimizer,
                                         double max_norm, double norm_type, bool error_if_nonfinite) {
  ShardedModule& state = sharded_of(module);
  state.enter_optimizer();
  std::vector<torch::Tensor> grads;
  for (auto& group : optimizer.param_groups()) {
    for (auto& param : group.params()) {
      if (param.grad().defined()) grads.push_back(param.grad());
    }
  }
  const bool infinity = std::isinf(norm_type);
  // This rank's part of the total (sum of |g|^p, or max |g|), then everyone's.
  double local = 0.0;
  for (const auto& grad : grads) {
    if (grad.numel() == 0) continue;
    const auto g = grad.detach().to(torch::kFloat64).abs();
    local = infinity ? std::max(local, g.max().item<double>()) : local + g.pow(norm_type).sum().item<double>();
  }
  torch::Tensor total = torch::tensor(local, torch::TensorOptions(torch::kFloat64).device(root_device()));
  if (state.strategy() != ShardingStrategy::kNoShard) collective().all_reduce(total, infinity ? ReduceOp::kMax : ReduceOp::kSum);
  const double norm = infinity ? total.item<double>() : std::pow(total.item<double>(), 1.0 / norm_type);
  if (error_if_nonfinite && !std::isfinite(norm)) {
    throw Error("The total norm of order " + std::to_string(norm_type) +
                " for gradients from `parameters` is non-finite, so it cannot be clipped. To disable this error and "
                "scale the gradients by the non-finite norm anyway, set error_if_nonfinite=false.");
  }
  const double coefficient = std::min(1.0, max_norm / (norm + 1e-6));
  torch::NoGradGuard no_grad;
  for (auto& grad : grads) grad.mul_(coefficient);
  return norm;
}

}  // namespace fabric
