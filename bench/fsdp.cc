// bench/fsdp: Fabric's fsdp (FULL_SHARD, one unit per Linear) against Fabric's ddp on the
// same ~103M-parameter MLP (8 x Linear(3584, 3584)), Adam, batch 8 per rank, CPU, at world
// sizes 2 and 4: training steps per second, and each rank's peak CPU tensor bytes while
// training (parameters, gradients, Adam's state and every temporary: counted by an
// allocator that wraps LibTorch's, bench/counting_allocator.h), the largest over the ranks.
// One JSON line per case, ratio = fsdp / ddp, from alternating rounds (--rounds, 3).
//   bench/run fsdp [--rounds N] [--steps N]
// (the same binary is the worker when FABRIC_BENCH_WORKER is set)
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "common.h"
#include "counting_allocator.h"
#include "fabric/fabric.h"
#include "fabric/strategies.h"

namespace {

constexpr int kLayers = 8, kWidth = 3584, kBatch = 8;

torch::nn::Sequential model() {
  torch::manual_seed(0);
  torch::nn::Sequential layers;
  for (int i = 0; i < kLayers; ++i) {
    layers->push_back(torch::nn::Linear(kWidth, kWidth));
    if (i + 1 < kLayers) layers->push_back(torch::nn::Tanh());
  }
  return layers;
}

// One rank: trains `steps` steps after 2 warm-up steps; rank 0 prints the JSON.
int worker(char** argv) {
  auto& counting = bench::CountingAllocator::install();
  torch::set_num_threads(1);
  const std::string kind = argv[1];
  const int world = std::stoi(argv[2]), steps = std::stoi(argv[3]);
  std::shared_ptr<fabric::Strategy> strategy;
  if (kind == "fsdp") {
    strategy = std::make_shared<fabric::FSDPStrategy>(fabric::FSDPOptions{.auto_wrap_module_types = {"torch::nn::LinearImpl"}});
  } else {
    strategy = std::make_shared<fabric::DDPStrategy>();
  }
  fabric::Fabric fabric({.accelerator = "cpu", .strategy = strategy, .devices = world});
  fabric.launch();
  auto module = fabric.setup_module(model());
  auto optimizer = fabric.setup_optimizers(std::make_shared<torch::optim::Adam>(module.parameters()));
  const torch::Tensor x = torch::randn({kBatch, kWidth}), y = torch::randn({kBatch, kWidth});
  const auto step = [&] {
    optimizer.zero_grad();
    fabric.backward(torch::mse_loss(module(x), y));
    optimizer.step();
  };
  counting.reset_peak();  // what training needs, not what building the full model took
  for (int i = 0; i < 2; ++i) step();
  fabric.barrier();
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < steps; ++i) step();
  fabric.barrier();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  torch::Tensor peak = torch::tensor(static_cast<double>(counting.peak()), torch::kFloat64);
  fabric.all_reduce(peak, "max");
  if (fabric.global_rank() == 0) {
    std::printf("{\"steps_per_s\": %f, \"peak_bytes\": %.0f}\n", steps / seconds, peak.item<double>());
  }
  return 0;
}

double json_number(const std::string& json, const std::string& key) {
  const auto at = json.find("\"" + key + "\"");
  if (at == std::string::npos) {
    std::fprintf(stderr, "bench/fsdp: no %s in: %s\n", key.c_str(), json.c_str());
    std::exit(1);
  }
  return std::strtod(json.c_str() + json.find(':', at) + 1, nullptr);
}

}  // namespace

int main(int argc, char** argv) {
  if (std::getenv("FABRIC_BENCH_WORKER")) return worker(argv);
  const std::string self = argv[0];
  int rounds = 3, steps = 4;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::string(argv[i]) == "--rounds") rounds = std::stoi(argv[i + 1]);
    if (std::string(argv[i]) == "--steps") steps = std::stoi(argv[i + 1]);
  }
  for (int world : {2, 4}) {
    const auto run = [&](const char* kind) {
      return bench::run_command("FABRIC_BENCH_WORKER=1 " + self + " " + kind + " " + std::to_string(world) + " " +
                                std::to_string(steps) + " 2>/dev/null");
    };
    bench::Comparison speed, memory;
    for (int round = 0; round < rounds; ++round) {
      for (const char* kind : round % 2 ? std::vector<const char*>{"ddp", "fsdp"} : std::vector<const char*>{"fsdp", "ddp"}) {
        const std::string json = run(kind);
        auto& speed_side = std::string(kind) == "fsdp" ? speed.ours : speed.theirs;
        auto& memory_side = std::string(kind) == "fsdp" ? memory.ours : memory.theirs;
        speed_side.push_back(json_number(json, "steps_per_s"));
        memory_side.push_back(json_number(json, "peak_bytes") / 1e6);
      }
    }
    const std::string name = "mlp-103m-ws" + std::to_string(world);
    std::printf("{\"bench\": \"fsdp\", \"case\": \"%s\", %s}\n", name.c_str(),
                speed.json("steps_per_s", "fabric-ddp", "higher", "%.3f").c_str());
    std::printf("{\"bench\": \"fsdp\", \"case\": \"%s\", %s}\n", name.c_str(),
                memory.json("peak_tensor_mb_per_rank", "fabric-ddp", "lower", "%.1f").c_str());
    std::fflush(stdout);
  }
  return 0;
}
