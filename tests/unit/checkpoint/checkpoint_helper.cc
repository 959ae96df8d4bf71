// A separate process for the checkpoint tests that need one:
//   checkpoint_helper train OPTIMIZER STEPS PATH        train from scratch, save everything
//   checkpoint_helper resume OPTIMIZER CKPT STEPS PATH  load CKPT in this new process, train on, save
//   checkpoint_helper save-forever PATH START           save {"model", "counter"} (START, START+1, ...) until killed
// Batches depend only on the global step, so N steps + M resumed steps see the same data as N + M.
#include <torch/torch.h>

#include <ATen/CPUGeneratorImpl.h>

#include <iostream>
#include <string>

#include "fabric/fabric.h"

namespace {

torch::nn::Sequential build_model() {
  torch::manual_seed(0);
  return torch::nn::Sequential(torch::nn::Linear(16, 64), torch::nn::Tanh(), torch::nn::Linear(64, 4));
}

std::shared_ptr<torch::optim::Optimizer> make_optimizer(const std::string& name, std::vector<torch::Tensor> params) {
  if (name == "sgd") return std::make_shared<torch::optim::SGD>(params, torch::optim::SGDOptions(0.05).momentum(0.9));
  if (name == "adam") return std::make_shared<torch::optim::Adam>(params, torch::optim::AdamOptions(1e-2));
  if (name == "adamw") return std::make_shared<torch::optim::AdamW>(params, torch::optim::AdamWOptions(1e-2));
  throw std::invalid_argument("unknown optimizer " + name);
}

template <typename Model>
void train(fabric::Fabric& fabric, Model& model, fabric::FabricOptimizer& optimizer, std::int64_t first,
           std::int64_t steps) {
  for (std::int64_t step = first; step < first + steps; ++step) {
    auto generator = at::make_generator<at::CPUGeneratorImpl>(1000 + step);
    torch::Tensor x = torch::randn({8, 16}, generator);
    torch::Tensor y = torch::randint(0, 4, {8}, generator);
    optimizer.zero_grad();
    fabric.backward(torch::nn::functional::cross_entropy(model(x), y));
    optimizer.step();
  }
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  fabric::Fabric fabric({.accelerator = "cpu"});
  if (mode == "train" || mode == "resume") {
    const std::string optimizer_name = argv[2];
    auto [model, optimizer] = fabric.setup(build_model(), [&](auto params) {
      return make_optimizer(optimizer_name, params);
    });
    std::int64_t step = 0;
    int arg = 3;
    if (mode == "resume") {
      fabric::State state{{"model", model}, {"optimizer", optimizer}, {"step", 0}};
      fabric.load(argv[arg++], state);
      step = state.get<std::int64_t>("step");
    }
    const std::int64_t steps = std::stoll(argv[arg++]);
    train(fabric, model, optimizer, step, steps);
    fabric.save(argv[arg], {{"model", model}, {"optimizer", optimizer}, {"step", step + steps}});
    return 0;
  }
  if (mode == "save-forever") {
    // ~4 MB per save, so that a kill often lands in the middle of one.
    auto model = torch::nn::Sequential(torch::nn::Linear(1024, 1024));
    for (std::int64_t counter = std::stoll(argv[3]);; ++counter) {
      fabric.save(argv[2], {{"model", model}, {"counter", counter}});
      std::cout << "saved " << counter << std::endl;  // the test waits for the first of these
    }
  }
  std::cerr << "usage: checkpoint_helper train|resume|save-forever ...\n";
  return 2;
}
