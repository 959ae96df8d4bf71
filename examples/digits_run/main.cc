// The digits example in Lightning's run() style (LightningLite's): the training program is
// a class derived from fabric::Fabric whose run() holds the loop, and calling run on a
// fabric::Launched<DigitsTrainer> launches the ranks first. The strategy is an instance,
// with DDP's options spelled out.
//   ./digits_run --devices 2 --epochs 10
#include <CLI/CLI.hpp>
#include <torch/torch.h>

#include <ATen/CPUGeneratorImpl.h>

#include "../digits/digits_data.h"
#include "fabric/fabric.h"
#include "fabric/strategies.h"

namespace {

torch::nn::Sequential make_net() {
  return torch::nn::Sequential(torch::nn::Linear(64, 128), torch::nn::ReLU(), torch::nn::Linear(128, 10));
}

class DigitsTrainer : public fabric::Fabric {
 public:
  using Fabric::Fabric;

  // Trains for `epochs` on 80% of the digits; returns the accuracy on the other 20%.
  double run(const std::string& csv, int epochs) {
    seed_everything(42);
    digits::DigitsData data = digits::load_digits(csv);
    torch::Tensor order = torch::randperm(data.labels.size(0), at::make_generator<at::CPUGeneratorImpl>(0));
    const int64_t n_train = data.labels.size(0) * 4 / 5;
    torch::Tensor test_rows = order.slice(0, n_train);

    auto [model, optimizer] = setup(make_net(), [](auto params) {
      return std::make_shared<torch::optim::AdamW>(params, torch::optim::AdamWOptions(3e-3));
    });
    auto loader = setup_dataloader(digits::DigitsDataset(data, order.slice(0, 0, n_train)),
                                   {.batch_size = 64, .shuffle = true});
    for (int epoch = 1; epoch <= epochs; ++epoch) {
      for (auto& batch : loader) {
        optimizer.zero_grad();
        backward(torch::nn::functional::cross_entropy(model(batch.data), batch.target));
        optimizer.step();
      }
    }
    torch::NoGradGuard no_grad;
    model.eval();
    torch::Tensor predicted = model(to_device(data.images.index_select(0, test_rows))).argmax(1).cpu();
    const double accuracy = predicted.eq(data.labels.index_select(0, test_rows)).to(torch::kFloat64).mean().item<double>();
    print("world size", world_size(), "| strategy", strategy().name(), "| test accuracy", accuracy);
    return accuracy;
  }
};

}  // namespace

int main(int argc, char** argv) {
  std::string csv = FABRIC_DIGITS_CSV, devices = "auto";
  int epochs = 10;
  double require_accuracy = 0;
  CLI::App app{"The digits example, written in Fabric's run() style"};
  app.add_option("--data", csv, "path of scikit-learn's datasets/data/digits.csv.gz");
  app.add_option("--devices", devices, "processes per node; >1 trains with DDP");
  app.add_option("--epochs", epochs, "passes over the training split")->check(CLI::PositiveNumber);
  app.add_option("--require-accuracy", require_accuracy, "exit 1 if test accuracy ends below this");
  CLI11_PARSE(app, argc, argv);
  try {
    auto ddp = std::make_shared<fabric::DDPStrategy>(fabric::DDPOptions{.bucket_cap_mb = 1, .static_graph = true});
    const bool distributed = devices != "1" && devices != "auto";
    fabric::Launched<DigitsTrainer> trainer({.accelerator = "cpu",
                                             .strategy = distributed ? fabric::StrategyInput(ddp) : "auto",
                                             .devices = devices});
    const double accuracy = trainer.run(csv, epochs);
    if (accuracy < require_accuracy) {
      std::cerr << "test accuracy " << accuracy << " is below the required " << require_accuracy << "\n";
      return 1;
    }
  } catch (const std::exception& error) {
    std::cerr << "digits_run: " << error.what() << "\n";
    return 2;
  }
  return 0;
}
