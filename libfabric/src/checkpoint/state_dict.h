// Modules and optimizers to and from PyTorch-style state dicts (torch::IValue dicts):
// module keys are the dotted parameter and buffer names Python's state_dict() uses; an
// optimizer dict has Python's {"state": {index: {...}}, "param_groups": [{..., "params": [...]}]}
// layout. Loading is split in two: plan_* validates everything and returns a commit that
// cannot fail, so a checkpoint that does not fit leaves the caller's objects untouched.
#pragma once

#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>

#include <functional>
#include <string>

namespace fabric::checkpoint {

using Commit = std::function<void()>;

// An empty dict of string keys and any values: what torch.save writes for a Python dict.
c10::impl::GenericDict string_dict();

torch::IValue module_state_dict(const torch::nn::Module& module);
// `what` names the entry in errors ("'model' of ckpt.pt"). strict: names must match exactly.
Commit plan_module_load(torch::nn::Module& module, const torch::IValue& state, bool strict, const std::string& what);

// SGD, Adam and AdamW; other optimizers are refused with a CheckpointError.
torch::IValue optimizer_state_dict(torch::optim::Optimizer& optimizer);
Commit plan_optimizer_load(torch::optim::Optimizer& optimizer, const torch::IValue& state, const std::string& what);

}  // namespace fabric::checkpoint
