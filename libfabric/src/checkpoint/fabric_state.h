// The pieces of Fabric::save / load that a strategy writing its own checkpoints (FSDP's
// sharded folders and gathered files) shares with the default path: a State as the dict
// torch.save writes, the filter, and loading a dict into a State by plan and commit.
#pragma once

#include <ATen/core/ivalue.h>

#include <functional>
#include <string>
#include <vector>

#include "checkpoint/state_dict.h"
#include "fabric/state.h"

namespace fabric::checkpoint {

// The dict fabric.save writes for `state`: modules and optimizers as their state dicts,
// each top-level entry passed through `convert` (by key; none: as it is) before `filter`
// applies.
torch::IValue saved_dict(const State& state, const SaveFilter& filter,
                         const std::function<torch::IValue(const std::string&, torch::IValue)>& convert = nullptr);
// UsageError for a filter key that is not in `state`, or an empty filter.
void check_filter(const State& state, const SaveFilter& filter);
// Validates loading `source` into `state`; the commits (which cannot fail) apply it.
void plan_state(State& state, c10::Dict<c10::IValue, c10::IValue> source, bool strict, const std::string& what,
                std::vector<Commit>& commits);
// What `source` holds beyond the keys of `state`, as fabric.load returns it.
State remainder_of(const State& state, const c10::Dict<c10::IValue, c10::IValue>& source);
// A file's top-level dict; CheckpointError for anything else.
torch::IValue read_top_level_dict(CheckpointIO& io, const std::string& path);

}  // namespace fabric::checkpoint
