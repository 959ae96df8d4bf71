// What Fabric's setup methods return: FabricModule runs the wrapped module's forward under
// the precision (casting inputs, autocast, casting outputs back); FabricOptimizer steps
// through the strategy (gradient scaling). Both share the strategy with Fabric, so they
// stay valid if the Fabric object goes away first. They are handles: copies refer to the
// same module and optimizer.
#pragma once

#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>

#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>

#include "fabric/apply.h"
#include "fabric/errors.h"
#include "fabric/strategy.h"

namespace fabric {
namespace detail {

// Makes backward through `tensor` fail with a UsageError unless it runs inside
// fabric.backward(): a direct loss.backward() would skip the precision's gradient scaling
// or the strategy's own backward (fsdp's gathering and reducing).
void guard_backward(const torch::Tensor& tensor);
// Tells the strategy when a forward it was told of (before_forward) threw, so that it can
// undo what before_forward began.
class ForwardFailure {
 public:
  ForwardFailure(Strategy& strategy, torch::nn::Module& module) : strategy_(strategy), module_(module) {}
  ~ForwardFailure();
  ForwardFailure(const ForwardFailure&) = delete;
  ForwardFailure& operator=(const ForwardFailure&) = delete;
  void dismiss() { failed_ = false; }

 private:
  Strategy& strategy_;
  torch::nn::Module& module_;
  bool failed_ = true;
};

// Tells the strategy's launcher (fabricd's heartbeats) that the training loop is moving;
// does nothing without one. Cheap enough for every forward.
// samples: how many a training forward took, for the launcher's samples per second.
void report_progress(const Strategy& strategy, const char* phase, std::int64_t samples = 0) noexcept;

// The batch size of a forward's arguments, as throughput meters guess it: the first
// dimension of the first tensor argument; 0 when no argument is a tensor with a dimension.
template <typename... Args>
std::int64_t leading_batch_size(const Args&... args) {
  std::int64_t size = 0;
  const auto take = [&size](const auto& arg) {
    if constexpr (std::is_same_v<std::decay_t<decltype(arg)>, torch::Tensor>) {
      if (size == 0 && arg.defined() && arg.dim() > 0) size = arg.size(0);
    }
  };
  (take(args), ...);
  return size;
}

template <typename Arg>
decltype(auto) cast_input(Arg&& arg, std::optional<torch::ScalarType> dtype) {
  if constexpr (holds_tensors_v<Arg>) {
    if (dtype) return cast_floating_tensors(std::forward<Arg>(arg), *dtype);
    return std::decay_t<Arg>(std::forward<Arg>(arg));
  } else {
    return std::forward<Arg>(arg);
  }
}

}  // namespace detail

template <typename Impl>
class FabricModule {
 public:
  FabricModule(std::shared_ptr<Impl> module, std::shared_ptr<Strategy> strategy)
      : module_(std::move(module)), strategy_(std::move(strategy)) {}

  // Calls the wrapped module's forward(args...) as Lightning's _FabricModule does.
  template <typename... Args>
  auto operator()(Args&&... args) {
    return forward(std::forward<Args>(args)...);
  }

  template <typename... Args>
  auto forward(Args&&... args) {
    if (module_->is_training()) {
      detail::report_progress(*strategy_, "train", detail::leading_batch_size(args...));
    } else {
      detail::report_progress(*strategy_, "evaluate");
    }
    Precision& precision = strategy_->precision();
    const auto input_dtype = precision.input_dtype();
    strategy_->before_forward(*module_);
    detail::ForwardFailure on_failure(*strategy_, *module_);
    auto output = [&] {
      Scope forward_context = precision.forward_context();
      return module_->forward(detail::cast_input(std::forward<Args>(args), input_dtype)...);
    }();
    if (precision.converts_output()) {
      output = cast_floating_tensors(std::move(output), c10::get_default_dtype_as_scalartype());
    }
    const bool guard = precision.requires_fabric_backward() || strategy_->requires_fabric_backward();
    std::vector<torch::Tensor> output_tensors;
    apply_to_tensors(output, [&](const torch::Tensor& tensor) {
      if (guard) detail::guard_backward(tensor);
      output_tensors.push_back(tensor);
      return tensor;
    });
    on_failure.dismiss();
    strategy_->after_forward(*module_, output_tensors);
    return output;
  }

  // The original module: its own parameter names, methods and state (no wrapper prefix).
  Impl* operator->() const { return module_.get(); }
  Impl& operator*() const { return *module_; }
  const std::shared_ptr<Impl>& module() const { return module_; }

  std::vector<torch::Tensor> parameters(bool recurse = true) const { return module_->parameters(recurse); }
  torch::OrderedDict<std::string, torch::Tensor> named_parameters(bool recurse = true) const {
    return module_->named_parameters(recurse);
  }
  void train(bool on = true) { module_->train(on); }
  void eval() { module_->eval(); }
  bool is_training() const { return module_->is_training(); }
  torch::Device device() const { return strategy_->root_device(); }

 private:
  std::shared_ptr<Impl> module_;
  std::shared_ptr<Strategy> strategy_;
};

class FabricOptimizer {
 public:
  FabricOptimizer(std::shared_ptr<torch::optim::Optimizer> optimizer, std::shared_ptr<Strategy> strategy)
      : optimizer_(std::move(optimizer)), strategy_(std::move(strategy)) {}

  // Steps through the strategy and precision. Returns false when the step was skipped
  // because the gradient scaler ("16-mixed") found non-finite gradients.
  bool step();
  // Steps with a closure that re-evaluates the model (zero_grad, forward, fabric.backward)
  // and returns the loss, as closure-based optimizers (torch::optim::LBFGS) need; the
  // closure runs with gradients enabled. Returns the loss the optimizer returns (LBFGS:
  // the closure's first one).
  torch::Tensor step(const LossClosure& closure);
  // As Python's Optimizer.zero_grad: drops the gradients (set_to_none) or zeroes them in
  // place. Unlike LibTorch's, it never detach_()es a gradient that has no graph, so DDP's
  // gradient_as_bucket_view gradients (views of its buckets) can be cleared either way.
  void zero_grad(bool set_to_none = true);

  torch::optim::Optimizer* operator->() const { return optimizer_.get(); }
  torch::optim::Optimizer& optimizer() const { return *optimizer_; }
  const std::shared_ptr<torch::optim::Optimizer>& shared() const { return optimizer_; }
  std::vector<torch::optim::OptimizerParamGroup>& param_groups() { return optimizer_->param_groups(); }

  // The wrapped optimizer as its concrete type, e.g. as<torch::optim::AdamW>().
  template <typename Optimizer>
  Optimizer& as() const {
    auto* typed = dynamic_cast<Optimizer*>(optimizer_.get());
    if (typed == nullptr) {
      throw UsageError(std::string("FabricOptimizer::as<") + typeid(Optimizer).name() +
                       ">(): the wrapped optimizer is a " + typeid(*optimizer_).name() + ".");
    }
    return *typed;
  }

 private:
  std::shared_ptr<torch::optim::Optimizer> optimizer_;
  std::shared_ptr<Strategy> strategy_;
};

}  // namespace fabric
