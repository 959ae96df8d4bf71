// A minimal training program of one's own: linear regression with Fabric, the loop plain
// LibTorch. It recovers the weights its data was made from, and says so:
//   fabricd run --nproc-per-node 2 ./train
// prints the world size, the final loss and the largest weight error on rank 0, and exits 1
// when the weights were not recovered (a broken build or launch cannot look like a success).
#include <torch/torch.h>

#include <iostream>

#include "fabric/fabric.h"

namespace {

// Rows of x with their targets y, as LibTorch Examples; the loader stacks them into batches.
struct Regression : torch::data::datasets::Dataset<Regression> {
  Regression(torch::Tensor x, torch::Tensor y) : x(std::move(x)), y(std::move(y)) {}
  torch::data::Example<> get(size_t i) override { return {x[i], y[i]}; }
  std::optional<size_t> size() const override { return x.size(0); }
  torch::Tensor x, y;
};

}  // namespace

int main() {
  try {
    fabric::Fabric fabric({.accelerator = "cpu"});  // devices, nodes: from fabricd/torchrun's environment
    fabric.launch();
    fabric.seed_everything(7);

    // y = x·w + b + noise; every rank makes the same data, and the loader gives each its shard.
    const torch::Tensor true_weight = torch::tensor({1.5, -2.0, 0.5, 3.0});
    const double true_bias = 0.25;
    torch::Tensor x = torch::randn({4096, 4}, at::make_generator<at::CPUGeneratorImpl>(0));
    torch::Tensor y = x.matmul(true_weight).unsqueeze(1) + true_bias +
                      0.01 * torch::randn({4096, 1}, at::make_generator<at::CPUGeneratorImpl>(1));

    auto [model, optimizer] = fabric.setup(torch::nn::Linear(4, 1), [](auto params) {
      return std::make_shared<torch::optim::SGD>(params, torch::optim::SGDOptions(0.05));
    });
    auto loader = fabric.setup_dataloader(Regression(x, y), {.batch_size = 32, .shuffle = true});

    double loss_value = 0;
    for (int epoch = 0; epoch < 5; ++epoch) {
      for (auto& batch : loader) {
        optimizer.zero_grad();
        torch::Tensor loss = torch::mse_loss(model(batch.data), batch.target);
        fabric.backward(loss);
        optimizer.step();
        loss_value = loss.item<double>();
      }
    }
    // DDP keeps the replicas equal; the error is the same on every rank.
    const double weight_error = (model->weight.detach().flatten() - true_weight).abs().max().item<double>();
    const double bias_error = std::abs(model->bias.detach().item<double>() - true_bias);
    fabric.print("world size", fabric.world_size(), "| final loss", loss_value, "| largest weight error",
                 std::max(weight_error, bias_error));
    return std::max(weight_error, bias_error) < 0.01 ? 0 : 1;
  } catch (const std::exception& error) {
    std::cerr << "train: " << error.what() << "\n";
    return 2;
  }
}
