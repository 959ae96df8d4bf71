// bench/ddp: Fabric's DDP against PyTorch's DistributedDataParallel under torchrun (Python,
// Gloo, CPU), world size 2, on the same models and batches: a small MLP and a ~25M-parameter
// one, as training steps per second; and all-reduce bus bandwidth (algbw * 2(n-1)/n) for
// 1-64 MB through Fabric's collective against torch.distributed.all_reduce on Gloo. One JSON
// line per case, ratio = ours / theirs, higher is better: the median of alternating rounds
// (--rounds, 5) with its min-max spread. Each side runs its processes alone (never both at
// once), one thread per process.
//   bench/run ddp [--rounds N]   (the same binary is the worker when FABRIC_BENCH_WORKER is set)
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "common.h"
#include "fabric/fabric.h"

namespace {

torch::nn::Sequential mlp(const std::string& size) {
  torch::manual_seed(0);
  if (size == "small") {
    return torch::nn::Sequential(torch::nn::Linear(128, 256), torch::nn::ReLU(), torch::nn::Linear(256, 256),
                                 torch::nn::ReLU(), torch::nn::Linear(256, 10));
  }
  return torch::nn::Sequential(torch::nn::Linear(1024, 4096), torch::nn::ReLU(), torch::nn::Linear(4096, 4096),
                               torch::nn::ReLU(), torch::nn::Linear(4096, 1024));
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Worker: one rank, started by the driver with torchrun-style variables.
int worker(int argc, char** argv) {
  torch::set_num_threads(1);
  const std::string mode = argv[1];
  fabric::Fabric fabric({.accelerator = "cpu", .strategy = "ddp", .devices = 2});
  fabric.launch();  // rank 0 re-executes this binary as rank 1
  if (mode == "train") {
    const std::string size = argv[2];
    const int steps = std::stoi(argv[3]);
    auto [model, optimizer] = fabric.setup(mlp(size), [](auto params) {
      return std::make_shared<torch::optim::SGD>(params, 0.01);
    });
    const int features = size == "small" ? 128 : 1024, classes = size == "small" ? 10 : 1024;
    torch::Tensor x = torch::randn({32, features}), y = torch::randint(0, classes, {32});
    auto step = [&] {
      optimizer.zero_grad();
      fabric.backward(torch::nn::functional::cross_entropy(model(x), y));
      optimizer.step();
    };
    for (int i = 0; i < 3; ++i) step();
    fabric.barrier();
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < steps; ++i) step();
    fabric.barrier();
    if (fabric.global_rank() == 0) std::printf("{\"steps_per_s\": %f}\n", steps / seconds_since(start));
  } else {
    const int megabytes = std::stoi(argv[2]), iterations = std::stoi(argv[3]);
    torch::Tensor tensor = torch::ones({megabytes * 1024 * 1024 / 4});
    fabric.all_reduce(tensor, "sum");
    fabric.barrier();
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < iterations; ++i) fabric.all_reduce(tensor, "sum");
    fabric.barrier();
    if (fabric.global_rank() == 0) std::printf("{\"seconds_per_op\": %f}\n", seconds_since(start) / iterations);
  }
  return 0;
}

double json_number(const std::string& json, const std::string& key) {
  const auto at = json.find("\"" + key + "\"");
  if (at == std::string::npos) {
    std::fprintf(stderr, "bench/ddp: no %s in: %s\n", key.c_str(), json.c_str());
    std::exit(1);
  }
  return std::strtod(json.c_str() + json.find(':', at) + 1, nullptr);
}

std::string ours(const std::string& self, const std::string& args) {
  // Fabric starts rank 1 itself (launch() re-executes this binary with the arguments).
  return bench::run_command("FABRIC_BENCH_WORKER=1 " + self + " " + args + " 2>/dev/null");
}

std::string theirs(const std::string& args) {
  return bench::run_command(std::string(FABRIC_PYTHON) + " -m torch.distributed.run --nproc-per-node 2 --master-port 29561 " +
             FABRIC_SOURCE_DIR + "/bench/ddp_reference.py " + args + " 2>/dev/null");
}

void print(const std::string& case_name, const bench::Comparison& comparison, const char* metric,
           const char* baseline) {
  std::printf("{\"bench\": \"ddp\", \"case\": \"%s\", %s}\n", case_name.c_str(),
              comparison.json(metric, baseline, "higher", "%.2f").c_str());
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  if (std::getenv("FABRIC_BENCH_WORKER")) return worker(argc, argv);
  const std::string self = argv[0];
  int rounds = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::string(argv[i]) == "--rounds") rounds = std::stoi(argv[i + 1]);
  }
  for (const auto& [size, steps] : {std::pair<std::string, int>{"small", 300}, {"large", 15}}) {
    const std::string args = "train " + size + " " + std::to_string(steps);
    const auto comparison = bench::alternate(
        rounds, [&] { return json_number(ours(self, args), "steps_per_s"); },
        [&] { return json_number(theirs(args), "steps_per_s"); });
    print("mlp-" + std::string(size == "small" ? "small" : "25m") + "-ws2", comparison, "steps_per_s",
          "pytorch-ddp-torchrun-gloo");
  }
  for (int megabytes : {1, 4, 16, 64}) {
    const std::string args = "allreduce " + std::to_string(megabytes) + " " + std::to_string(megabytes >= 16 ? 10 : 40);
    const double bytes = megabytes * 1024.0 * 1024.0, bus_factor = 2.0 * (2 - 1) / 2;  // 2(n-1)/n, n = 2
    const auto bus_gb_per_s = [&](const std::string& json) {
      return bytes / json_number(json, "seconds_per_op") * bus_factor / 1e9;
    };
    const auto comparison = bench::alternate(
        rounds, [&] { return bus_gb_per_s(ours(self, args)); }, [&] { return bus_gb_per_s(theirs(args)); });
    print("allreduce-" + std::to_string(megabytes) + "mb-ws2", comparison, "bus_gb_per_s", "torch.distributed-gloo");
  }
  return 0;
}
