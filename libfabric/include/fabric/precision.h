// A precision plugin owns dtypes: how a module is converted at setup, which default dtype
// applies while modules and tensors are created, what runs around forward (autocast or a
// default-dtype switch), how inputs and outputs are cast, and how backward and the
// optimizer step run (gradient scaling for "16-mixed"). One implementation per family of
// Lightning precision strings (src/precision/). Not thread-safe: one training loop per process.
#pragma once

#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>
#include <torch/types.h>

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fabric/scope.h"

namespace fabric {

class GradScaler;

// What fabric.backward passes on to autograd, as loss.backward(gradient, retain_graph,
// create_graph, inputs) takes them; through the precision, so a scaled loss gets them too.
struct BackwardOptions {
  torch::Tensor gradient = {};            // d(out)/d(loss) for a non-scalar loss; undefined: ones
  std::optional<bool> retain_graph = {};  // keep the graph for another backward; default: create_graph
  bool create_graph = false;              // record backward itself (gradients of gradients)
  std::vector<torch::Tensor> inputs = {}; // accumulate only into these; empty: every leaf
};

// Runs loss.backward with `options`.
void run_backward(const torch::Tensor& loss, const BackwardOptions& options);

// A closure that re-evaluates the model and returns the loss (LBFGS calls it several times
// per step), as torch::optim::Optimizer::step takes one.
using LossClosure = std::function<torch::Tensor()>;

// What an optimizer step did: whether it stepped (a gradient scaler skips a step with
// non-finite gradients) and the closure's loss (undefined without a closure).
struct StepOutcome {
  bool stepped = true;
  torch::Tensor loss = {};
};

class Precision {
 public:
  virtual ~Precision() = default;

  // The canonical Lightning string: "32-true", "64-true", "16-true", "bf16-true",
  // "16-mixed" or "bf16-mixed".
  virtual std::string_view name() const = 0;

  // Casts the module's floating parameters and buffers at setup (true precisions only).
  virtual void convert_module(torch::nn::Module& module) const {}
  // Default dtype while modules and tensors are created under init_module/init_tensor.
  virtual Scope init_context() const { return {}; }
  // Runs around every FabricModule forward, and is what fabric.autocast() returns.
  virtual Scope forward_context() const { return {}; }
  // The dtype floating inputs of forward are cast to; nullopt leaves them as they are.
  virtual std::optional<torch::ScalarType> input_dtype() const { return std::nullopt; }
  // Whether floating outputs of forward are cast to the default dtype (float32) afterwards.
  virtual bool converts_output() const { return false; }

  // Whether `loss.backward()` bypasses something this precision must do in backward, so
  // that only fabric.backward(loss) is allowed.
  virtual bool requires_fabric_backward() const { return false; }
  virtual void backward(const torch::Tensor& loss, const BackwardOptions& options) const {
    run_backward(loss, options);
  }
  // Steps the optimizer, with the closure when there is one (nullptr otherwise).
  virtual StepOutcome optimizer_step(torch::optim::Optimizer& optimizer, const LossClosure& closure) {
    return {.stepped = true, .loss = optimizer.step(closure)};
  }
  // Divides the gradients by the loss scale before clipping; no-op without scaling.
  virtual void unscale_gradients(torch::optim::Optimizer& optimizer) {}
  // The gradient scaler of "16-mixed", nullptr for every other precision.
  virtual GradScaler* grad_scaler() { return nullptr; }
};

// Every accepted precision string, canonical names first, then the legacy aliases.
const std::vector<std::string>& valid_precision_inputs();

}  // namespace fabric
