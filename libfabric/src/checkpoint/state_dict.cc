#include "checkpoint/state_dict.h"

#include <torch/optim.h>

#include <map>
#include <set>
#include <sstream>

#include "fabric/errors.h"
#include "utilities/optimizer_state.h"

namespace fabric::checkpoint {

c10::impl::GenericDict string_dict() { return c10::impl::GenericDict(c10::StringType::get(), c10::AnyType::get()); }

namespace {

// Python's order: a module's own parameters, then its own buffers, then each child's.
void collect(const torch::nn::Module& module, const std::string& prefix, std::vector<std::pair<std::string, torch::Tensor>>& out) {
  for (const auto& item : module.named_parameters(/*recurse=*/false)) out.emplace_back(prefix + item.key(), item.value());
  for (const auto& item : module.named_buffers(/*recurse=*/false)) out.emplace_back(prefix + item.key(), item.value());
  for (const auto& child : module.named_children()) collect(*child.value(), prefix + child.key() + ".", out);
}

std::string shape(const torch::Tensor& tensor) {
  std::ostringstream out;
  out << tensor.sizes();
  return out.str();
}

std::string quoted(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& name : names) out += (out.empty() ? "\"" : ", \"") + name + "\"";
  return out;
}

[[noreturn]] void mismatch(const std::string& what, const std::string& why) {
  throw CheckpointError("Cannot load " + what + ": " + why);
}

c10::Dict<c10::IValue, c10::IValue> as_dict(const torch::IValue& value, const std::string& what) {
  if (!value.isGenericDict()) mismatch(what, std::string("expected a state dict, found a ") + value.tagKind() + ".");
  return value.toGenericDict();
}

}  // namespace

torch::IValue module_state_dict(const torch::nn::Module& module) {
  std::vector<std::pair<std::string, torch::Tensor>> entries;
  collect(module, "", entries);
  auto dict = string_dict();
  for (auto& [name, tensor] : entries) dict.insert(name, tensor.detach());
  return dict;
}

Commit plan_module_load(torch::nn::Module& module, const torch::IValue& state, bool strict, const std::string& what) {
  auto dict = as_dict(state, what);
  std::vector<std::pair<std::string, torch::Tensor>> targets;
  collect(module, "", targets);
  std::vector<std::string> missing, unexpected;
  std::set<std::string> known;
  std::vector<std::pair<torch::Tensor, torch::Tensor>> copies;  // (target, source)
  for (const auto& [name, target] : targets) {
    known.insert(name);
    auto found = dict.find(name);
    if (found == dict.end()) {
      missing.push_back(name);
      continue;
    }
    if (!found->value().isTensor()) mismatch(what, "entry \"" + name + "\" is not a tensor.");
    const torch::Tensor& source = found->value().toTensor();
    if (source.sizes() != target.sizes()) {
      mismatch(what, "size mismatch for " + name + ": the checkpoint has shape " + shape(source) +
                         ", the module has " + shape(target) + ".");
    }
    copies.emplace_back(target, source);
  }
  for (const auto& entry : dict) {
    const std::string name = entry.key().isString() ? entry.key().toStringRef() : "<non-string key>";
    if (!known.count(name)) unexpected.push_back(name);
  }
  if (strict && (!missing.empty() || !unexpected.empty())) {
    std::string why;
    if (!missing.empty()) why += "missing key(s) in the checkpoint: " + quoted(missing) + ". ";
    if (!unexpected.empty()) why += "unexpected key(s) in the checkpoint: " + quoted(unexpected) + ". ";
    mismatch(what, why + "Pass strict=false to load only the matching entries.");
  }
  return [copies = std::move(copies)] {
    torch::NoGradGuard no_grad;
    for (const auto& [target, source] : copies) const_cast<torch::Tensor&>(target).copy_(source);
  };
}

namespace {

// One optimizer family: how its options and per-parameter state map to Python's keys.
struct OptimizerCodec {
  std::function<void(const torch::optim::OptimizerOptions&, c10::impl::GenericDict&)> save_options;
  std::function<void(const c10::Dict<c10::IValue, c10::IValue>&, torch::optim::OptimizerOptions&)> load_options;
  std::function<void(const torch::optim::OptimizerParamState&, c10::impl::GenericDict&)> save_state;
  std::function<std::unique_ptr<torch::optim::OptimizerParamState>(const c10::Dict<c10::IValue, c10::IValue>&)> load_state;
};

torch::Tensor tensor_or_undefined(const c10::Dict<c10::IValue, c10::IValue>& dict, const char* key) {
  auto found = dict.find(key);
  return found == dict.end() || found->value().isNone() ? torch::Tensor() : found->value().toTensor();
}

void put_tensor(c10::impl::GenericDict& dict, const char* key, const torch::Tensor& tensor) {
  if (tensor.defined()) dict.insert(key, tensor.detach());
}

template <typename Options>
void save_adam_options(const Options& options, c10::impl::GenericDict& group) {
  group.insert("lr", options.lr());
  group.insert("betas", c10::ivalue::Tuple::create({std::get<0>(options.betas()), std::get<1>(options.betas())}));
  group.insert("eps", options.eps());
  group.insert("weight_decay", options.weight_decay());
  group.insert("amsgrad", options.amsgrad());
  group.insert("maximize", false);
  group.insert("foreach", torch::IValue());
  group.insert("capturable", false);
  group.insert("differentiable", false);
  group.insert("fused", torch::IValue());
}

template <typename Options>
void load_adam_options(const c10::Dict<c10::IValue, c10::IValue>& group, Options& options) {
  options.lr(group.at("lr").toDouble());
  const auto& betas = group.at("betas").toTupleRef().elements();
  options.betas({betas.at(0).toDouble(), betas.at(1).toDouble()});
  options.eps(group.at("eps").toDouble());
  options.weight_decay(group.at("weight_decay").toDouble());
  options.amsgrad(group.at("amsgrad").toBool());
}

template <typename ParamState>
void save_adam_state(const ParamState& state, c10::impl::GenericDict& dict) {
  // Python keeps `step` as a float tensor; float32 counts exactly up to 2^24 steps.
  dict.insert("step", torch::tensor(static_cast<double>(state.step()), torch::kFloat32));
  put_tensor(dict, "exp_avg", state.exp_avg());
  put_tensor(dict, "exp_avg_sq", state.exp_avg_sq());
  put_tensor(dict, "max_exp_avg_sq", state.max_exp_avg_sq());
}

template <typename ParamState>
std::unique_ptr<torch::optim::OptimizerParamState> load_adam_state(const c10::Dict<c10::IValue, c10::IValue>& dict) {
  auto state = std::make_unique<ParamState>();
  const auto& step = dict.at("step");
  state->step(step.isTensor() ? static_cast<std::int64_t>(step.toTensor().item<double>()) : step.toInt());
  state->exp_avg(tensor_or_undefined(dict, "exp_avg"));
  state->exp_avg_sq(tensor_or_undefined(dict, "exp_avg_sq"));
  state->max_exp_avg_sq(tensor_or_undefined(dict, "max_exp_avg_sq"));
  return state;
}

template <typename Options, typename ParamState>
OptimizerCodec adam_codec() {
  return {[](const auto& options, auto& group) { save_adam_options(static_cast<const Options&>(options), group); },
          [](const auto& group, auto& options) { load_adam_options(group, static_cast<Options&>(options)); },
          [](const auto& state, auto& dict) { save_adam_state(static_cast<const ParamState&>(state), dict); },
          [](const auto& dict) { return load_adam_state<ParamState>(dict); }};
}

OptimizerCodec sgd_codec() {
  using torch::optim::SGDOptions;
  using torch::optim::SGDParamState;
  return {[](const auto& base, auto& group) {
            const auto& options = static_cast<const SGDOptions&>(base);
            group.insert("lr", options.lr());
            group.insert("momentum", options.momentum());
            group.insert("dampening", options.dampening());
            group.insert("weight_decay", options.weight_decay());
            group.insert("nesterov", options.nesterov());
            group.insert("maximize", false);
            group.insert("foreach", torch::IValue());
            group.insert("differentiable", false);
            group.insert("fused", torch::IValue());
          },
          [](const auto& group, auto& base) {
            auto& options = static_cast<SGDOptions&>(base);
            options.lr(group.at("lr").toDouble());
            options.momentum(group.at("momentum").toDouble());
            options.dampening(group.at("dampening").toDouble());
            options.weight_decay(group.at("weight_decay").toDouble());
            options.nesterov(group.at("nesterov").toBool());
          },
          [](const auto& state, auto& dict) {
            put_tensor(dict, "momentum_buffer", static_cast<const SGDParamState&>(state).momentum_buffer());
          },
          [](const auto& dict) {
            auto state = std::make_unique<SGDParamState>();
            state->momentum_buffer(tensor_or_undefined(dict, "momentum_buffer"));
            return std::unique_ptr<torch::optim::OptimizerParamState>(std::move(state));
          }};
}

const OptimizerCodec& codec_for(const torch::optim::Optimizer& optimizer) {
  static const OptimizerCodec sgd = sgd_codec();
  static const OptimizerCodec adam = adam_codec<torch::optim::AdamOptions, torch::optim::AdamParamState>();
  static const OptimizerCodec adamw = adam_codec<torch::optim::AdamWOptions, torch::optim::AdamWParamState>();
  if (dynamic_cast<const torch::optim::SGD*>(&optimizer)) return sgd;
  if (dynamic_cast<const torch::optim::AdamW*>(&optimizer)) return adamw;
  if (dynamic_cast<const torch::optim::Adam*>(&optimizer)) return adam;
  throw CheckpointError(std::string("Checkpointing the state of optimizer type ") + typeid(optimizer).name() +
                        " is not supported yet; supported are SGD, Adam and AdamW.");
}

}  // namespace

torch::IValue optimizer_state_dict(torch::optim::Optimizer& optimizer) {
  const OptimizerCodec& codec = codec_for(optimizer);
  auto states = c10::impl::GenericDict(c10::IntType::get(), c10::AnyType::get());
  auto groups = c10::impl::GenericList(c10::AnyType::get());
  std::int64_t index = 0;
  for (auto& group : optimizer.param_groups()) {
    auto group_dict = string_dict();
    codec.save_options(group.options(), group_dict);
    // Any-typed: the pickler writes int-typed lists with a torch.jit tag Python refuses.
    auto params = c10::impl::GenericList(c10::AnyType::get());
    for (const auto& param : group.params()) {
      if (auto found = optimizer.state().find(param.unsafeGetTensorImpl()); found != optimizer.state().end()) {
        auto state_dict = string_dict();
        codec.save_state(*found->second, state_dict);
        states.insert(index, state_dict);
      }
      params.push_back(index++);
    }
    group_dict.insert("params", params);
    groups.push_back(group_dict);
  }
  auto dict = string_dict();
  dict.insert("state", states);
  dict.insert("param_groups", groups);
  return dict;
}

Commit plan_optimizer_load(torch::optim::Optimizer& optimizer, const torch::IValue& state, const std::string& what) {
  const OptimizerCodec& codec = codec_for(optimizer);
  auto dict = as_dict(state, what);
  if (!dict.contains("state") || !dict.contains("param_groups")) {
    mismatch(what, "an optimizer state dict has \"state\" and \"param_groups\".");
  }
  auto saved_groups = dict.at("param_groups").toList();
  auto& groups = optimizer.param_groups();
  if (saved_groups.size() != groups.size()) {
    mismatch(what, "the checkpoint has " + std::to_string(saved_groups.size()) + " parameter groups, the optimizer " +
                       std::to_string(groups.size()) + ".");
  }
  auto saved_states = as_dict(dict.at("state"), what);
  // Everything is decoded into these before anything of the optimizer changes.
  std::vector<std::unique_ptr<torch::optim::OptimizerOptions>> options;
  std::vector<std::pair<void*, std::unique_ptr<torch::optim::OptimizerParamState>>> states;
  try {
    for (std::size_t g = 0; g < groups.size(); ++g) {
      auto saved = saved_groups.get(g).toGenericDict();
      auto indices = saved.at("params").toList();
      if (indices.size() != groups[g].params().size()) {
        mismatch(what, "parameter group " + std::to_string(g) + " has " + std::to_string(indices.size()) +
                           " parameters in the checkpoint and " + std::to_string(groups[g].params().size()) +
                           " in the optimizer.");
      }
      options.push_back(groups[g].options().clone());
      codec.load_options(saved, *options.back());
      for (std::size_t p = 0; p < indices.size(); ++p) {
        auto found = saved_states.find(indices.get(p));
        if (found == saved_states.end()) continue;
        const torch::Tensor& param = groups[g].params()[p];
        auto param_state = codec.load_state(found->value().toGenericDict());
        states.emplace_back(param.unsafeGetTensorImpl(), std::move(param_state));
      }
    }
  } catch (const c10::Error& error) {
    mismatch(what, std::string("malformed optimizer state (") + error.what_without_backtrace() + ").");
  }
  auto shared_options = std::make_shared<decltype(options)>(std::move(options));
  auto shared_states = std::make_shared<decltype(states)>(std::move(states));
  return [&optimizer, shared_options, shared_states] {
    auto& groups = optimizer.param_groups();
    for (std::size_t g = 0; g < groups.size(); ++g) groups[g].set_options((*shared_options)[g]->clone());
    optimizer.state().clear();
    for (auto& [key, state] : *shared_states) optimizer.state()[key] = std::move(state);
    // Checkpoints load on the CPU; the state lives where the parameters are.
    if (!groups.empty() && !groups[0].params().empty()) {
      utilities::move_optimizer_state(optimizer, groups[0].params()[0].device());
    }
  };
}

}  // namespace fabric::checkpoint
