// Trains an MLP on scikit-learn's handwritten digits with Fabric: the loop is plain
// LibTorch; Fabric places it, applies the precision and shards the data across ranks.
//   ./digits --precision bf16-mixed --epochs 30
#include <CLI/CLI.hpp>
#include <torch/torch.h>

#include "digits_data.h"
#include "fabric/fabric.h"

namespace {

struct NetImpl : torch::nn::Module {
  NetImpl()
      : fc1(register_module("fc1", torch::nn::Linear(64, 128))),
        fc2(register_module("fc2", torch::nn::Linear(128, 64))),
        fc3(register_module("fc3", torch::nn::Linear(64, 10))) {}
  torch::Tensor forward(const torch::Tensor& x) {
    return fc3(torch::relu(fc2(torch::relu(fc1(x)))));
  }
  torch::nn::Linear fc1, fc2, fc3;
};
TORCH_MODULE(Net);

struct Args {
  std::string data = FABRIC_DIGITS_CSV;
  std::string accelerator = "auto";
  std::string devices = "auto";
  int num_nodes = 0;  // 0: the launcher's node count
  std::string precision = "32-true";
  int epochs = 30;
  size_t batch_size = 64;
  double lr = 3e-3;
  int64_t seed = 42;
  double require_accuracy = 0.0;
  std::string log_dir = "logs";
  std::string logger = "csv";
  std::string checkpoint = "";
};

// Accuracy of `model` on `images`/`labels`, in evaluation mode.
template <typename Model>
double accuracy(Model& model, fabric::Fabric& fabric, const torch::Tensor& images, const torch::Tensor& labels) {
  torch::NoGradGuard no_grad;
  model.eval();
  torch::Tensor predictions = model(fabric.to_device(images)).argmax(1).cpu();
  model.train();
  return predictions.eq(labels).to(torch::kFloat64).mean().template item<double>();
}

std::shared_ptr<fabric::Logger> make_logger(const std::string& kind, const std::string& root_dir) {
  if (kind == "tensorboard") return fabric::loggers::tensorboard({.root_dir = root_dir});
  return fabric::loggers::csv({.root_dir = root_dir});
}

}  // namespace

int main(int argc, char** argv) {
  Args args;
  CLI::App app{"Train an MLP on scikit-learn's digits with Fabric for C++"};
  app.add_option("--data", args.data, "path of scikit-learn's datasets/data/digits.csv.gz");
  app.add_option("--accelerator", args.accelerator, "auto, cpu or cuda");
  app.add_option("--devices", args.devices, "processes (devices) per node; >1 trains with DDP");
  app.add_option("--num-nodes", args.num_nodes,
                 "nodes the job spans (Fabric's num_nodes); default: GROUP_WORLD_SIZE, which fabricd and torchrun "
                 "set, else 1");
  app.add_option("--precision", args.precision, "32-true, 64-true, bf16-mixed, 16-mixed, bf16-true, 16-true");
  app.add_option("--epochs", args.epochs, "passes over the training split")->check(CLI::PositiveNumber);
  app.add_option("--batch-size", args.batch_size, "samples per step")->check(CLI::PositiveNumber);
  app.add_option("--lr", args.lr, "AdamW learning rate");
  app.add_option("--seed", args.seed, "seed for weights, split and shuffling");
  app.add_option("--require-accuracy", args.require_accuracy, "exit 1 if test accuracy ends below this");
  app.add_option("--log-dir", args.log_dir, "root of the logger's lightning_logs/version_N");
  app.add_option("--logger", args.logger, "csv (metrics.csv) or tensorboard (event files: tensorboard --logdir logs)")
      ->check(CLI::IsMember({"csv", "tensorboard"}));
  app.add_option("--checkpoint", args.checkpoint, "save model and optimizer here at the end (PyTorch-readable)");
  CLI11_PARSE(app, argc, argv);
  if (args.num_nodes == 0) {
    // Fabric, like Lightning's, takes num_nodes from its caller; an elastic job's node count
    // changes between restarts, so the example asks the launcher.
    const char* nodes = std::getenv("GROUP_WORLD_SIZE");
    args.num_nodes = nodes && *nodes ? std::atoi(nodes) : 1;
  }

  try {
    fabric::Fabric fabric({.accelerator = args.accelerator,
                           .devices = args.devices,
                           .num_nodes = args.num_nodes,
                           .precision = args.precision,
                           .loggers = {make_logger(args.logger, args.log_dir)}});
    fabric.launch();
    fabric.seed_everything(args.seed);

    digits::DigitsData data = digits::load_digits(args.data);
    // A fixed 80/20 split: the permutation comes from its own generator so that it is the
    // same on every rank and every run.
    torch::Tensor order = torch::randperm(data.labels.size(0), at::make_generator<at::CPUGeneratorImpl>(0));
    const int64_t n_train = data.labels.size(0) * 4 / 5;
    torch::Tensor train_rows = order.slice(0, 0, n_train), test_rows = order.slice(0, n_train);
    torch::Tensor test_images = data.images.index_select(0, test_rows);
    torch::Tensor test_labels = data.labels.index_select(0, test_rows);

    auto [model, optimizer] = fabric.setup(Net(), [&](auto params) {
      return std::make_shared<torch::optim::AdamW>(params, torch::optim::AdamWOptions(args.lr));
    });
    auto loader = fabric.setup_dataloader(digits::DigitsDataset(data, train_rows),
                                          {.batch_size = args.batch_size, .shuffle = true});

    fabric.print("Training on", data.labels.size(0) - test_rows.size(0), "digits,", "testing on", test_rows.size(0),
                 "| device", fabric.device(), "| precision", fabric.precision().name(), "| world size",
                 fabric.world_size(), "| threads per rank", at::get_num_threads());
    for (int epoch = 1; epoch <= args.epochs; ++epoch) {
      double loss_sum = 0;
      int64_t steps = 0;
      for (auto& batch : loader) {
        optimizer.zero_grad();
        torch::Tensor loss = torch::nn::functional::cross_entropy(model(batch.data), batch.target);
        fabric.backward(loss);
        optimizer.step();
        loss_sum += loss.item<double>();
        ++steps;
        fabric.log("train_loss", loss);
      }
      if (epoch == 1 || epoch % 5 == 0 || epoch == args.epochs) {
        const double test_accuracy = accuracy(model, fabric, test_images, test_labels);
        fabric.print("epoch", epoch, "/", args.epochs, "| loss", loss_sum / static_cast<double>(steps),
                     "| test accuracy", test_accuracy);
        fabric.log("test_accuracy", test_accuracy);
      }
    }
    const double final_accuracy = accuracy(model, fabric, test_images, test_labels);
    fabric.print("final test accuracy", final_accuracy, "| metrics in", fabric.logger().log_dir());
    if (!args.checkpoint.empty()) {
      fabric.save(args.checkpoint, {{"model", model}, {"optimizer", optimizer}, {"epochs", args.epochs}});
      fabric.print("checkpoint written to", args.checkpoint, "(torch.load opens it)");
    }
    if (final_accuracy < args.require_accuracy) {
      std::cerr << "test accuracy " << final_accuracy << " is below the required " << args.require_accuracy << "\n";
      return 1;
    }
  } catch (const std::exception& error) {
    std::cerr << "digits: " << error.what() << "\n";
    return 2;
  }
  return 0;
}
