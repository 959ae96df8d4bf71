#include "utilities/optimizer_state.h"

#include <torch/optim.h>

namespace fabric::utilities {
namespace {

void move(torch::Tensor& tensor, torch::Device device) {
  if (tensor.defined() && tensor.device() != device) tensor = tensor.to(device);
}

// Adam and AdamW keep the same three moments in distinct (unrelated) state types.
template <typename AdamLikeState>
void move_moments(AdamLikeState& state, torch::Device device) {
  auto exp_avg = state.exp_avg(), exp_avg_sq = state.exp_avg_sq(), max_exp_avg_sq = state.max_exp_avg_sq();
  move(exp_avg, device), move(exp_avg_sq, device), move(max_exp_avg_sq, device);
  state.exp_avg(exp_avg).exp_avg_sq(exp_avg_sq).max_exp_avg_sq(max_exp_avg_sq);
}

void move_state(torch::optim::OptimizerParamState& state, torch::Device device) {
  using namespace torch::optim;
  if (auto* sgd = dynamic_cast<SGDParamState*>(&state)) {
    auto buffer = sgd->momentum_buffer();
    move(buffer, device);
    sgd->momentum_buffer(buffer);
  } else if (auto* adam = dynamic_cast<AdamParamState*>(&state)) {
    move_moments(*adam, device);
  } else if (auto* adamw = dynamic_cast<AdamWParamState*>(&state)) {
    move_moments(*adamw, device);
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
