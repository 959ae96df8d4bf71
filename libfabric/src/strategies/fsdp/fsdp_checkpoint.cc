// FSDPStrategy::save_checkpoint / load_checkpoint. A sharded folder holds one file per rank
// (rank-R.pt: the checkpoint as fabric.save writes it, each sharded parameter and its
// optimizer state as this rank's 1-D piece) and index.pt (every sharded tensor's shape and
// which elements each rank's piece holds). Loading assembles this rank's pieces for the
// current world size from the pieces that overlap them, so a folder from any world size
// loads. A "full" checkpoint is the same single file DDP writes, gathered on rank zero.
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <optional>
#include <random>
#include <unordered_map>

#include "checkpoint/atomic_file.h"
#include "checkpoint/fabric_state.h"
#include "fabric/errors.h"
#include "fabric/strategies.h"
#include "loggers/files.h"
#include "strategies/fsdp/sharded_module.h"

namespace fabric {
namespace {

namespace files = loggers::files;
using strategies::FlatMember;
using strategies::ShardedModule;

constexpr const char* kIndexFile = "index.pt";
constexpr const char* kFormat = "fabric.fsdp.sharded";
constexpr std::int64_t kFormatVersion = 1;

std::string rank_file(std::int64_t rank) { return "rank-" + std::to_string(rank) + ".pt"; }

// Where a parameter lives: its member of a unit, and whether the unit is sharded.
struct Placement {
  const FlatMember* member;
  bool sharded;
};

// The elements [begin, begin + numel) of a parameter's flattened values.
struct Range {
  std::int64_t begin = 0, numel = 0;
};

Range local_range(const std::optional<Placement>& placement, std::int64_t numel) {
  if (!placement || !placement->sharded) return {0, numel};
  return {placement->member->piece_begin, placement->member->local_numel};
}

bool is_piece_state(const std::string& key, const c10::IValue& value) {
  return key != "step" && value.isTensor();
}

// The sharded modules of a state (top-level entries) and their parameters.
class Layout {
 public:
  Layout(const FSDPStrategy& strategy, const State& state) {
    for (const auto& [key, value] : state) {
      if (!value.is_module()) continue;
      ShardedModule* module = strategy.sharded(value.module());
      if (!module) continue;
      for (const auto& unit : module->units()) {
        for (const auto& member : unit->members()) {
          const Placement placement{&member, unit->sharded()};
          members_[key + "/" + member.name] = placement;
          by_param_[member.param.unsafeGetTensorImpl()] = {key + "/" + member.name, placement};
        }
      }
    }
    for (const auto& [key, value] : state) {
      if (value.is_state()) reject_nested(strategy, value.state(), key);
    }
  }

  // A module parameter by its checkpoint name ("model/body.0.weight"); nullopt: not sharded.
  std::optional<Placement> member(const std::string& name) const {
    auto found = members_.find(name);
    if (found == members_.end()) return std::nullopt;
    return found->second;
  }
  // An optimizer's parameters in its state dict's order: checkpoint name and placement.
  std::vector<std::pair<std::string, std::optional<Placement>>> optimizer_params(torch::optim::Optimizer& optimizer) const {
    std::vector<std::pair<std::string, std::optional<Placement>>> params;
    for (const auto& group : optimizer.param_groups()) {
      for (const auto& param : group.params()) {
        auto found = by_param_.find(param.unsafeGetTensorImpl());
        if (found == by_param_.end()) params.emplace_back("", std::nullopt);
        else params.emplace_back(found->second.first, found->second.second);
      }
    }
    return params;
  }
  const std::map<std::string, Placement>& members() const { return members_; }

 private:
  // Sharded modules, and optimizers of their parameters, are mapped at the top level only.
  void reject_nested(const FSDPStrategy& strategy, const State& nested, const std::string& path) const {
    for (const auto& [key, value] : nested) {
      const bool sharded_module = value.is_module() && strategy.sharded(value.module());
      if (sharded_module || (value.is_optimizer() && steps_sharded(value.optimizer()))) {
        throw UsageError("fsdp: the " + std::string(sharded_module ? "sharded module" : "optimizer of a sharded module") +
                         " at '" + path + "." + key + "' is inside a nested state; put sharded modules and their "
                         "optimizers at the top level of the state given to fabric.save and fabric.load.");
      }
      if (value.is_state()) reject_nested(strategy, value.state(), path + "." + key);
    }
  }

  bool steps_sharded(torch::optim::Optimizer& optimizer) const {
    for (const auto& [name, placement] : optimizer_params(optimizer)) {
      if (placement) return true;
    }
    return false;
  }

  std::map<std::string, Placement> members_;
  std::unordered_map<const c10::TensorImpl*, std::pair<std::string, Placement>> by_param_;
};

c10::impl::GenericDict copy_dict(const c10::IValue& value) {
  auto source = value.toGenericDict();
  auto copy = c10::impl::GenericDict(source.keyType(), source.valueType());
  for (const auto& entry : source) copy.insert(entry.key(), entry.value());
  return copy;
}

using TensorMap = std::function<torch::Tensor(const std::string& name, const Placement&, const torch::Tensor&)>;

// `module_dict` with every sharded parameter's tensor replaced by map(name, placement, tensor).
c10::IValue map_module(const Layout& layout, const std::string& key, const c10::IValue& module_dict,
                       const TensorMap& map) {
  auto dict = copy_dict(module_dict);
  for (const auto& entry : module_dict.toGenericDict()) {
    const std::string name = key + "/" + entry.key().toStringRef();
    if (auto placement = layout.member(name); placement && entry.value().isTensor()) {
      dict.insert_or_assign(entry.key(), map(name, *placement, entry.value().toTensor()));
    }
  }
  return dict;
}

// The same for an optimizer's per-parameter state (exp_avg, momentum_buffer; not step).
c10::IValue map_optimizer(const Layout& layout, torch::optim::Optimizer& optimizer, const c10::IValue& optimizer_dict,
                          const TensorMap& map) {
  const auto params = layout.optimizer_params(optimizer);
  auto dict = copy_dict(optimizer_dict);
  const auto states = optimizer_dict.toGenericDict().at("state").toGenericDict();
  auto mapped_states = copy_dict(states);
  for (const auto& entry : states) {
    const auto index = static_cast<std::size_t>(entry.key().toInt());
    if (index >= params.size() || !params[index].second) continue;
    const auto& [name, placement] = params[index];
    auto param_state = copy_dict(entry.value());
    for (const auto& item : entry.value().toGenericDict()) {
      if (is_piece_state(item.key().toStringRef(), item.value())) {
        param_state.insert_or_assign(item.key(), map(name, *placement, item.value().toTensor()));
      }
    }
    mapped_states.insert_or_assign(entry.key(), param_state);
  }
  dict.insert_or_assign("state", mapped_states);
  return dict;
}

// `value`, the checkpoint's entry for `target`, through map_module / map_optimizer.
c10::IValue map_entry(const Layout& layout, const StateValue& target, const std::string& key, const c10::IValue& value,
                      const TensorMap& map) {
  if (!value.isGenericDict()) return value;
  if (target.is_module()) return map_module(layout, key, value, map);
  if (target.is_optimizer()) return map_optimizer(layout, target.optimizer(), value, map);
  return value;
}

std::string shape_of(c10::IntArrayRef shape) { return c10::str(shape); }

// A full tensor from the checkpoint, cut to this rank's piece.
torch::Tensor cut_to_piece(const std::string& name, const Placement& placement, const torch::Tensor& full) {
  const FlatMember& member = *placement.member;
  if (full.numel() != member.numel) {
    throw CheckpointError("size mismatch for " + name + ": the checkpoint has shape " + shape_of(full.sizes()) +
                          ", the model " + shape_of(member.shape) + ".");
  }
  if (!placement.sharded) return full.view(member.shape);
  return full.reshape({-1}).narrow(0, member.piece_begin, member.local_numel).clone();
}

std::string random_suffix() {
  std::random_device device;
  return std::to_string(device()) + std::to_string(::getpid());
}

// "" if a sharded checkpoint may be saved at `path` (nothing there, an empty folder or an
// earlier sharded checkpoint, which it replaces), else why not.
std::string refusal_to_save_at(const std::string& path) {
  if (!files::exists(path)) return "";
  if (!files::is_directory(path)) {
    return "Cannot save a sharded checkpoint to " + path +
           ": a file is there. Remove it, or use state_dict_type=\"full\" for a single file.";
  }
  if (files::exists(path + "/" + kIndexFile) || files::list_directory(path).empty()) return "";
  return "Cannot save a sharded checkpoint to " + path + ": that folder is not a sharded checkpoint (it has no " +
         kIndexFile + "), and saving would replace it with all it holds. Save to another path, or remove the folder.";
}

std::string without_trailing_slashes(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  return path;
}

// Every rank's `error` ("" if its part succeeded): returns when all succeeded; otherwise
// every rank throws the same CheckpointError, with the first failed rank's reason.
void agree(Collective& collective, torch::Device device, const std::string& error, const std::string& doing,
           const std::string& consequence) {
  const std::int64_t world = collective.world_size();
  torch::Tensor first_failed = torch::tensor(error.empty() ? world : collective.rank(), torch::kInt64).to(device);
  collective.all_reduce(first_failed, ReduceOp::kMin);
  const auto failed_rank = first_failed.item<std::int64_t>();
  if (failed_rank == world) return;
  const std::string reason = collective.broadcast_bytes(error, static_cast<int>(failed_rank));
  throw CheckpointError(doing + " failed on rank " + std::to_string(failed_rank) + ", so " + consequence + ": " +
                        reason);
}

// What `action` throws, as text ("" if nothing).
std::string error_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const std::exception& failure) {
    return failure.what();
  }
  return "";
}

// Puts the complete folder `partial` at `path` in one step: the old folder (if any) and the
// new one trade places atomically, then the old one goes.
void replace_directory(CheckpointIO& io, const std::string& partial, const std::string& path) {
  if (!files::exists(path)) {
    if (::rename(partial.c_str(), path.c_str()) != 0) {
      throw CheckpointError("Could not move the sharded checkpoint into " + path + ": " + std::strerror(errno));
    }
  } else {
    if (::renameat2(AT_FDCWD, partial.c_str(), AT_FDCWD, path.c_str(), RENAME_EXCHANGE) != 0) {
      throw CheckpointError("Could not replace the sharded checkpoint " + path + ": " + std::strerror(errno));
    }
    // Now the old folder; the new one is in place whether or not it goes.
    error_of([&] { io.remove_checkpoint(partial); });
  }
  checkpoint::sync_directory(checkpoint::parent_of(path));
}

void make_directory(const std::string& path) {
  checkpoint::create_parent_directories(path + "/" + kIndexFile);
}

// The folder's index, every rank file present: CheckpointError naming what is wrong.
c10::Dict<c10::IValue, c10::IValue> read_index(CheckpointIO& io, const std::string& path) {
  const std::string index_path = path + "/" + kIndexFile;
  if (!files::exists(index_path)) {
    throw CheckpointError("The folder " + path + " has no " + kIndexFile +
                          ": it is not a sharded checkpoint, or the save that wrote it did not finish.");
  }
  auto index = checkpoint::read_top_level_dict(io, index_path).toGenericDict();
  if (!index.contains("format") || index.at("format").toStringRef() != kFormat ||
      index.at("version").toInt() != kFormatVersion) {
    throw CheckpointError(index_path + " is not the index of a Fabric FSDP sharded checkpoint (version " +
                          std::to_string(kFormatVersion) + ").");
  }
  const std::int64_t world = index.at("world_size").toInt();
  for (std::int64_t rank = 0; rank < world; ++rank) {
    if (!files::exists(path + "/" + rank_file(rank))) {
      throw CheckpointError("The sharded checkpoint " + path + " was written by " + std::to_string(world) +
                            " ranks but " + rank_file(rank) + " is missing: it cannot be loaded.");
    }
  }
  return index;
}

// Builds a rank's pieces for the current world size from the folder's, reading (and
// verifying) only the rank files it needs.
class Assembler {
 public:
  Assembler(CheckpointIO& io, std::string path, c10::Dict<c10::IValue, c10::IValue> index)
      : io_(io), path_(std::move(path)), tensors_(index.at("tensors").toGenericDict()) {}

  c10::Dict<c10::IValue, c10::IValue> file(std::int64_t rank) {
    auto found = files_.find(rank);
    if (found != files_.end()) return found->second;
    auto dict = checkpoint::read_top_level_dict(io_, path_ + "/" + rank_file(rank)).toGenericDict();
    return files_.emplace(rank, dict).first->second;
  }

  bool is_sharded(const std::string& name) const { return tensors_.contains(name); }
  // Whether entry `key` of the checkpoint is a module with sharded tensors.
  bool holds_module(const std::string& key) const {
    for (const auto& entry : tensors_) {
      if (entry.key().toStringRef().rfind(key + "/", 0) == 0) return true;
    }
    return false;
  }
  const std::string& path() const { return path_; }

  // The elements `want` of tensor `name`, from the pieces `locate(file)` finds in each file.
  torch::Tensor assemble(const std::string& name, const std::optional<Placement>& target,
                         const std::function<torch::Tensor(const c10::Dict<c10::IValue, c10::IValue>&)>& locate) {
    auto entry = tensors_.at(name).toGenericDict();
    const torch::Tensor shape_tensor = entry.at("shape").toTensor();
    const std::vector<std::int64_t> shape(shape_tensor.data_ptr<std::int64_t>(),
                                          shape_tensor.data_ptr<std::int64_t>() + shape_tensor.numel());
    const torch::Tensor pieces = entry.at("pieces").toTensor();
    std::int64_t numel = 1;
    for (auto dim : shape) numel *= dim;
    if (target && target->member->shape != shape) {
      throw CheckpointError("size mismatch for " + name + ": the checkpoint has shape " + shape_of(shape) +
                            ", the model " + shape_of(target->member->shape) + ".");
    }
    const Range want = local_range(target, numel);
    torch::Tensor out;
    std::int64_t filled = 0;
    // Pieces come in rank order; what an earlier rank's piece gave is not taken again (under
    // NO_SHARD every rank saved the whole tensor).
    std::int64_t covered = want.begin;
    for (std::int64_t rank = 0; rank < pieces.size(0); ++rank) {
      const Range have{pieces[rank][0].item<std::int64_t>(), pieces[rank][1].item<std::int64_t>()};
      const std::int64_t begin = std::max(covered, have.begin);
      const std::int64_t end = std::min(want.begin + want.numel, have.begin + have.numel);
      if (begin >= end) continue;  // that rank's file is not read for this tensor
      // NO_SHARD ranks saved whole tensors, in their shape.
      const torch::Tensor piece = locate(file(rank)).reshape({-1});
      if (!out.defined()) out = torch::empty({want.numel}, piece.options());
      out.narrow(0, begin - want.begin, end - begin).copy_(piece.narrow(0, begin - have.begin, end - begin));
      filled += end - begin;
      covered = end;
    }
    if (filled != want.numel) {
      throw CheckpointError("The pieces of " + name + " in " + path_ + " do not cover the elements this rank needs.");
    }
    if (!out.defined()) out = locate(file(0)).reshape({-1}).narrow(0, 0, 0).clone();  // an empty piece
    if (!target || !target->sharded) return out.view(shape);
    return out;
  }

 private:
  CheckpointIO& io_;
  std::string path_;
  c10::Dict<c10::IValue, c10::IValue> tensors_;
  std::map<std::int64_t, c10::Dict<c10::IValue, c10::IValue>> files_;
};

// Where an assembled tensor goes: this rank's piece of a sharded parameter, or (nullopt)
// the whole tensor.
using TargetOf = std::function<std::optional<Placement>(const std::string& name)>;

c10::IValue assemble_module(Assembler& assembler, const TargetOf& target_of, const std::string& key,
                            const c10::IValue& base) {
  auto dict = copy_dict(base);
  for (const auto& entry : base.toGenericDict()) {
    const std::string param = entry.key().toStringRef();
    const std::string name = key + "/" + param;
    if (!assembler.is_sharded(name)) continue;
    dict.insert_or_assign(entry.key(), assembler.assemble(name, target_of(name), [&](const auto& file) {
      return file.at(key).toGenericDict().at(param).toTensor();
    }));
  }
  return dict;
}

// An optimizer's parameters in its state dict's order: checkpoint name and placement
// (Layout::optimizer_params); empty: whole tensors for all.
using OptimizerParams = std::vector<std::pair<std::string, std::optional<Placement>>>;

c10::IValue assemble_optimizer(Assembler& assembler, const OptimizerParams& targets, const std::string& key,
                               const c10::IValue& base, const c10::List<c10::IValue>& saved_names) {
  auto dict = copy_dict(base);
  const auto states = base.toGenericDict().at("state").toGenericDict();
  auto assembled = copy_dict(states);
  for (const auto& entry : states) {
    const auto index = static_cast<std::size_t>(entry.key().toInt());
    if (index >= saved_names.size()) continue;
    const std::string name = saved_names.get(index).toStringRef();
    if (name.empty() || !assembler.is_sharded(name)) continue;
    std::optional<Placement> target;
    if (!targets.empty()) {
      const std::string now = index < targets.size() ? targets[index].first : "";
      if (now != name) {
        throw CheckpointError("The optimizer '" + key + "' in " + assembler.path() + " has the state of " + name +
                              " as its parameter " + std::to_string(index) + ", where this optimizer has " +
                              (now.empty() ? std::string("no parameter of a sharded module") : now) +
                              ": create it from the same parameters, in the same order, as the one saved.");
      }
      target = targets[index].second;
    }
    auto param_state = copy_dict(entry.value());
    for (const auto& item : entry.value().toGenericDict()) {
      const std::string state_key = item.key().toStringRef();
      if (!is_piece_state(state_key, item.value())) continue;
      param_state.insert_or_assign(item.key(), assembler.assemble(name, target, [&](const auto& file) {
        return file.at(key).toGenericDict().at("state").toGenericDict().at(entry.key()).toGenericDict()
            .at(state_key).toTensor();
      }));
    }
    assembled.insert_or_assign(entry.key(), param_state);
  }
  dict.insert_or_assign("state", assembled);
  return dict;
}

// The checkpoint a sharded folder holds, each sharded tensor assembled for `module_target`
// (a module's parameters) or `optimizer_targets(key)` (optimizer `key`'s state).
c10::IValue assemble_folder(CheckpointIO& io, const std::string& path, const TargetOf& module_target,
                            const std::function<OptimizerParams(const std::string& key)>& optimizer_targets) {
  auto index = read_index(io, path);
  Assembler assembler(io, path, index);
  const auto optimizers = index.at("optimizers").toGenericDict();
  auto result = checkpoint::string_dict();
  for (const auto& entry : assembler.file(0)) {
    const std::string key = entry.key().toStringRef();
    c10::IValue value = entry.value();
    if (optimizers.contains(key)) {
      value = assemble_optimizer(assembler, optimizer_targets(key), key, value, optimizers.at(key).toList());
    } else if (value.isGenericDict() && assembler.holds_module(key)) {
      value = assemble_module(assembler, module_target, key, value);
    }
    result.insert(entry.key(), value);
  }
  return result;
}

// This rank's checkpoint dict (pieces for its sharded parameters) from a sharded folder.
c10::IValue read_sharded(CheckpointIO& io, const std::string& path, const Layout& layout, const State& state) {
  return assemble_folder(
      io, path, [&](const std::string& name) { return layout.member(name); },
      [&](const std::string& key) {
        if (!state.contains(key) || !state.at(key).is_optimizer()) return OptimizerParams{};
        return layout.optimizer_params(state.at(key).optimizer());
      });
}

// Which elements this rank's piece of every sharded tensor holds: [begin, numel) pairs, in
// the order of layout.members().
torch::Tensor local_ranges(const Layout& layout) {
  const auto& members = layout.members();
  torch::Tensor ranges = torch::empty({static_cast<std::int64_t>(2 * members.size())}, torch::kInt64);
  std::int64_t at = 0;
  for (const auto& [name, placement] : members) {
    const Range range = local_range(placement, placement.member->numel);
    ranges[at++] = range.begin;
    ranges[at++] = range.numel;
  }
  return ranges;
}

// Rank zero's last step of a sharded save: index.pt (every sharded tensor's shape and each
// rank's piece of it, from `all_ranges`; every optimizer's parameters by name) into the
// complete folder `partial`, which then takes the place of `path`.
void write_index(CheckpointIO& io, const Layout& layout, const State& state, const std::vector<torch::Tensor>& all_ranges,
                 const std::string& partial, const std::string& path) {
  const auto world = static_cast<std::int64_t>(all_ranges.size());
  auto tensors = checkpoint::string_dict();
  std::int64_t at = 0;
  for (const auto& [name, placement] : layout.members()) {
    // Tensors, not lists: torch.save writes a list of ints as an object only Python rebuilds.
    auto entry = checkpoint::string_dict();
    entry.insert("shape", torch::tensor(placement.member->shape, torch::kInt64));
    torch::Tensor pieces = torch::empty({world, 2}, torch::kInt64);
    for (std::int64_t rank = 0; rank < world; ++rank) pieces[rank] = all_ranges[rank].cpu().narrow(0, at, 2);
    entry.insert("pieces", pieces);
    tensors.insert(name, entry);
    at += 2;
  }
  auto optimizers = checkpoint::string_dict();
  for (const auto& [key, value] : state) {
    if (!value.is_optimizer()) continue;
    auto names = c10::impl::GenericList(c10::AnyType::get());
    for (const auto& [name, placement] : layout.optimizer_params(value.optimizer())) names.push_back(name);
    optimizers.insert(key, names);
  }
  auto index = checkpoint::string_dict();
  index.insert("format", kFormat);
  index.insert("version", kFormatVersion);
  index.insert("world_size", world);
  index.insert("tensors", tensors);
  index.insert("optimizers", optimizers);
  io.save_checkpoint(index, partial + "/" + kIndexFile);
  checkpoint::sync_directory(partial);
  replace_directory(io, partial, path);
}

}  // namespace

void FSDPStrategy::save_checkpoint(const std::string& given_path, const State& state, const SaveFilter& filter,
                                   std::optional<std::string> state_dict_type) {
  for (auto& [module, sharded] : modules_) sharded->enter_optimizer();
  const Layout layout(*this, state);
  if (state_dict_type.value_or(fsdp_options_.state_dict_type) == "full") {
    // Every rank takes part in gathering each piece; rank zero keeps the whole tensors and
    // writes, the others drop them at once (one full copy of the model, as Lightning's
    // rank0_only).
    const TensorMap gather = [this](const std::string&, const Placement& placement, const torch::Tensor& piece) {
      if (!placement.sharded) return piece;
      auto pieces = collective().all_gather(piece.contiguous());
      if (!is_global_zero()) return piece;
      return torch::cat(pieces).view(placement.member->shape);
    };
    const auto gathered = [&](const std::string& key, torch::IValue value) {
      return map_entry(layout, state.at(key), key, value, gather);
    };
    const c10::IValue dict = checkpoint::saved_dict(state, filter, gathered);
    if (is_global_zero()) checkpoint_io().save_checkpoint(dict, given_path);
    return;
  }
  if (!filter.empty()) {
    throw UsageError("fsdp: a filter cannot be applied to a sharded checkpoint (Lightning refuses it too); leave it "
                     "out, or save with FSDPOptions::state_dict_type=\"full\".");
  }
  const std::string path = without_trailing_slashes(given_path);
  // Nothing is written where the folder may not go.
  const std::string refusal = collective().broadcast_bytes(is_global_zero() ? refusal_to_save_at(path) : "", 0);
  if (!refusal.empty()) throw CheckpointError(refusal);

  // Every rank writes its file into a fresh folder beside `path`; once all have, rank zero
  // adds the index and swaps the folder in. A failure on any rank leaves `path` as it was.
  const std::string partial = path + ".partial-" + collective().broadcast_bytes(random_suffix(), 0);
  const std::string doing = "Saving the sharded checkpoint " + path;
  const std::string consequence = path + " was left as it was";
  const auto remove_partial = [&] {
    if (is_global_zero() && files::exists(partial)) error_of([&] { checkpoint_io().remove_checkpoint(partial); });
  };
  try {
    agree(collective(), root_device(), is_global_zero() ? error_of([&] { make_directory(partial); }) : "", doing,
          consequence);
    const std::string written = error_of([&] {
      checkpoint_io().save_checkpoint(checkpoint::saved_dict(state, {}), partial + "/" + rank_file(global_rank()));
    });
    const auto all_ranges = collective().all_gather(local_ranges(layout).to(root_device()));
    agree(collective(), root_device(), written, doing, consequence);
    const std::string indexed =
        is_global_zero() ? error_of([&] { write_index(checkpoint_io(), layout, state, all_ranges, partial, path); }) : "";
    agree(collective(), root_device(), indexed, doing, consequence);
  } catch (...) {
    remove_partial();
    throw;
  }
}

State FSDPStrategy::load_checkpoint(const std::string& given_path, State& state, bool strict) {
  for (auto& [module, sharded] : modules_) sharded->enter_optimizer();
  const std::string path = without_trailing_slashes(given_path);
  const Layout layout(*this, state);
  // Every rank plans its part; only if all of them can does any rank commit.
  std::vector<checkpoint::Commit> commits;
  c10::IValue source;
  const std::string error = error_of([&] {
    if (files::is_directory(path)) {
      source = read_sharded(checkpoint_io(), path, layout, state);
    } else {
      auto file = checkpoint::read_top_level_dict(checkpoint_io(), path).toGenericDict();
      auto local = copy_dict(file);
      for (const auto& [key, value] : state) {
        if (auto found = file.find(key); found != file.end()) {
          local.insert_or_assign(key, map_entry(layout, value, key, found->value(), cut_to_piece));
        }
      }
      source = local;
    }
    checkpoint::plan_state(state, source.toGenericDict(), strict, path, commits);
  });
  agree(collective(), root_device(), error, "Loading " + path, "no rank loaded anything");
  for (const auto& commit : commits) commit();
  return checkpoint::remainder_of(state, source.toGenericDict());
}

void consolidate_sharded_checkpoint(const std::string& folder, const std::string& file) {
  TorchCheckpointIO io;
  const TargetOf whole = [](const std::string&) { return std::nullopt; };
  const auto all_whole = [](const std::string&) { return OptimizerParams{}; };
  io.save_checkpoint(assemble_folder(io, without_trailing_slashes(folder), whole, all_whole), file);
}

}  // namespace fabric
