// Small modules the unit tests share.
#pragma once

#include <torch/torch.h>

namespace fabric::testing {

// A two-layer MLP that records the dtype its first matmul ran in, so tests can see what
// autocast or a true precision did inside forward.
struct ProbeNetImpl : torch::nn::Module {
  ProbeNetImpl()
      : fc1(register_module("fc1", torch::nn::Linear(8, 16))), fc2(register_module("fc2", torch::nn::Linear(16, 4))) {}

  torch::Tensor forward(const torch::Tensor& x) {
    input_dtype = x.scalar_type();
    torch::Tensor hidden = fc1(x);
    matmul_dtype = hidden.scalar_type();
    return fc2(torch::relu(hidden));
  }

  torch::nn::Linear fc1, fc2;
  torch::ScalarType input_dtype = torch::kFloat32;
  torch::ScalarType matmul_dtype = torch::kFloat32;
};
TORCH_MODULE(ProbeNet);

}  // namespace fabric::testing
