#include "utilities/optimizer_state.h"

#include <torch/optim.h>

namespace fabric::utilities {
namespace {

void move(torch::Tensor& tensor, torch::Device device) {
  if (tensor.defined() && tensor.device() != device) tensor = tensor.to(device);
}

void move_state(torch::optim::OptimizerParamState& state, torch::Device device) {
  using namespace torch::optim;
  if (auto* sgd = dynamic_cast<SGDParamState*>(&state)) {
    auto buffer = sgd->momentum_buffer();
    move(buffer, device);
    sgd->momentum_buffer(buffer);
  } else if (auto* adam = dynamic_cast<AdamParamState*>(&state)) {
    auto a = adam->exp_avg(), b = adam->exp_avg_sq(), c = adam->max_exp_avg_sq();
    move(a, device), move(b, device), move(c, device);
    adam->exp_avg(a).exp_avg_sq(b).max_exp_avg_sq(c);
  } else if (auto* adamw = dynamic_cast<AdamWParamState*>(&state)) {
    auto a = adamw->exp_avg(), b = adamw->exp_avg_sq(), c = adamw->max_exp_avg_sq();
    move(a, device), move(b, device), move(c, device);
    adamw->exp_avg(a).exp_avg_sq(b).max_exp_avg_sq(c);
  } else if (auto* adagrad = dynamic_cast<AdagradParamState*>(&state)) {
    auto sum = adagrad->sum();
    move(sum, device);
    adagrad->sum(sum);
  } else if (auto* rmsprop = dynamic_cast<RMSpropParamState*>(&state)) {
    auto a = rmsprop->square_avg(), b = rmsprop->momentum_buffer(), c = rmsprop->grad_avg();
    move(a, device), move(b, device), move(c, device);
    rmsprop->square_avg(a).momentum_buffer(b).grad_avg(c);
  }
  // LBFGSParamState holds history that LBFGS rebuilds on its own device; left as is.
}

}  // namespace

void move_optimizer_state(torch::optim::Optimizer& optimizer, torch::Device device) {
  for (auto& [key, state] : optimizer.state()) move_state(*state, device);
}

}  // namespace fabric::utilities
