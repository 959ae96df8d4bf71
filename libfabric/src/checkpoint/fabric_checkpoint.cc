// Fabric::save / load / load_raw: Lightning Fabric's checkpoint semantics over
// checkpoint_file (the bytes) and state_dict (modules and optimizers).
#include <vector>

#include "checkpoint/fabric_state.h"
#include "checkpoint/state_dict.h"
#include "environments/launcher_services.h"
#include "fabric/fabric.h"
#include "fabric/strategies.h"

namespace fabric {
namespace checkpoint {
namespace {

torch::IValue to_ivalue(const StateValue& value);

torch::IValue to_ivalue(const State& state) {
  auto dict = string_dict();
  for (const auto& [key, value] : state) dict.insert(key, to_ivalue(value));
  return dict;
}

torch::IValue to_ivalue(const StateValue& value) {
  if (value.is_module()) return checkpoint::module_state_dict(value.module());
  if (value.is_optimizer()) return checkpoint::optimizer_state_dict(value.optimizer());
  if (value.is_state()) return to_ivalue(value.state());
  return value.value();
}

// Lightning's _apply_filter: keeps the entries of a dict-valued entry that the filter
// accepts; nullopt when it keeps none (the key is then left out). Other values pass.
std::optional<torch::IValue> apply_filter(const torch::IValue& value, const SaveFilter::mapped_type& keep) {
  if (!value.isGenericDict()) return value;
  auto source = value.toGenericDict();
  auto kept = c10::impl::GenericDict(source.keyType(), source.valueType());
  for (const auto& entry : source) {
    const std::string key = entry.key().isString() ? entry.key().toStringRef() : c10::str(entry.key());
    if (keep(key, entry.value())) kept.insert(entry.key(), entry.value());
  }
  if (kept.empty()) return std::nullopt;
  return kept;
}

State to_state(const torch::IValue& dict_value) {
  State state;
  for (const auto& entry : dict_value.toGenericDict()) {
    const std::string key = entry.key().isString() ? entry.key().toStringRef() : c10::str(entry.key());
    state[key] = StateValue(entry.value());
  }
  return state;
}

// Validates loading `source` into `target`; the returned commits apply it.
void plan(StateValue& target, const torch::IValue& source, bool strict, const std::string& what,
          std::vector<Commit>& commits);

}  // namespace

torch::IValue read_top_level_dict(CheckpointIO& io, const std::string& path) {
  torch::IValue checkpoint = io.load_checkpoint(path);
  if (!checkpoint.isGenericDict()) {
    throw CheckpointError("Checkpoint " + path + " holds a " + checkpoint.tagKind() +
                          ", not a dict of named entries. Was it written by fabric.save? For a bare state "
                          "dict use fabric.load_raw.");
  }
  return checkpoint;
}

void plan_state(State& state, c10::Dict<c10::IValue, c10::IValue> source, bool strict, const std::string& what,
                std::vector<Commit>& commits) {
  std::vector<std::string> missing;
  for (auto& [key, value] : state) {
    auto found = source.find(key);
    if (found == source.end()) {
      missing.push_back(key);
      continue;
    }
    plan(value, found->value(), strict, "'" + key + "' of " + what, commits);
  }
  if (strict && !missing.empty()) {
    throw CheckpointError("The requested state contains the key '" + missing.front() + "'" +
                          (missing.size() > 1 ? " (and " + std::to_string(missing.size() - 1) + " more)" : "") +
                          " that does not exist in " + what + ". To disable strict loading, pass strict=false.");
  }
}

namespace {

void plan(StateValue& target, const torch::IValue& source, bool strict, const std::string& what,
          std::vector<Commit>& commits) {
  if (target.is_module()) {
    commits.push_back(checkpoint::plan_module_load(target.module(), source, strict, what));
  } else if (target.is_optimizer()) {
    commits.push_back(checkpoint::plan_optimizer_load(target.optimizer(), source, what));
  } else if (target.is_state()) {
    if (!source.isGenericDict()) throw CheckpointError("Cannot load " + what + ": expected a dict.");
    plan_state(target.state(), source.toGenericDict(), strict, what, commits);
  } else {
    commits.push_back([&target, source] { target = StateValue(source); });
  }
}

}  // namespace

torch::IValue saved_dict(const State& state, const SaveFilter& filter,
                        const std::function<torch::IValue(const std::string&, torch::IValue)>& convert) {
  auto dict = string_dict();
  for (const auto& [key, value] : state) {
    torch::IValue converted = convert ? convert(key, to_ivalue(value)) : to_ivalue(value);
    auto keep = filter.find(key);
    if (keep == filter.end()) {
      dict.insert(key, converted);
    } else if (auto kept = apply_filter(converted, keep->second)) {
      dict.insert(key, *kept);
    }
  }
  return dict;
}

void check_filter(const State& state, const SaveFilter& filter) {
  for (const auto& [key, keep] : filter) {
    if (!state.contains(key)) {
      throw UsageError("The filter key '" + key + "' is not present in the state to save; filter keys must be "
                       "top-level keys of the state.");
    }
    if (!keep) throw UsageError("The filter for '" + key + "' is empty; give a callable (key, value) -> bool.");
  }
}

State remainder_of(const State& state, const c10::Dict<c10::IValue, c10::IValue>& source) {
  State remainder;
  for (const auto& entry : source) {
    const std::string key = entry.key().isString() ? entry.key().toStringRef() : c10::str(entry.key());
    if (!state.contains(key)) remainder[key] = StateValue(entry.value());
  }
  return remainder;
}

}  // namespace checkpoint

using namespace checkpoint;

void Fabric::save(const std::string& path, const State& state, const SaveFilter& filter) {
  check_filter(state, filter);
  auto busy = environments::busy(strategy_->launcher(), "checkpoint");
  if (auto* fsdp = dynamic_cast<FSDPStrategy*>(strategy_.get())) {
    fsdp->save_checkpoint(path, state, filter);
  } else if (is_global_zero()) {
    strategy_->checkpoint_io().save_checkpoint(saved_dict(state, filter), path);
  }
  barrier("fabric.save");
}

State Fabric::load(const std::string& path, State& state, bool strict) {
  auto busy = environments::busy(strategy_->launcher(), "checkpoint");
  if (auto* fsdp = dynamic_cast<FSDPStrategy*>(strategy_.get())) {
    State remainder = fsdp->load_checkpoint(path, state, strict);
    barrier("fabric.load");
    return remainder;
  }
  torch::IValue checkpoint = read_top_level_dict(strategy_->checkpoint_io(), path);
  auto source = checkpoint.toGenericDict();
  std::vector<Commit> commits;
  plan_state(state, source, strict, path, commits);
  for (const auto& commit : commits) commit();
  barrier("fabric.load");
  return remainder_of(state, source);
}

State Fabric::load(const std::string& path) {
  State whole = to_state(read_top_level_dict(strategy_->checkpoint_io(), path));
  barrier("fabric.load");
  return whole;
}

void Fabric::load_raw(const std::string& path, const StateValue& target, bool strict) {
  if (!target.is_module() && !target.is_optimizer()) {
    throw UsageError("load_raw loads into a module or an optimizer; use load() for other state.");
  }
  torch::IValue source = strategy_->checkpoint_io().load_checkpoint(path);
  Commit commit = target.is_module() ? checkpoint::plan_module_load(target.module(), source, strict, path)
                                     : checkpoint::plan_optimizer_load(target.optimizer(), source, path);
  commit();
}

}  // namespace fabric
