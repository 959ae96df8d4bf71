// bench/step_overhead: the same training step (zero_grad, forward, loss, backward, Adam
// step) on the same small MLP, through Fabric and through plain LibTorch, interleaved in
// one process so machine noise hits both alike. Prints one JSON line per precision case;
// ratio = Fabric steps/s ÷ plain steps/s, the median over paired rounds (1.0 = no
// overhead, 0.98 = 2% slower).
//   bench/run step_overhead [--rounds 21] [--steps 1000]
#include <ATen/autocast_mode.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "fabric/fabric.h"

namespace {

torch::nn::Sequential make_mlp() {
  torch::manual_seed(0);
  return torch::nn::Sequential(torch::nn::Linear(128, 256), torch::nn::ReLU(), torch::nn::Linear(256, 256),
                               torch::nn::ReLU(), torch::nn::Linear(256, 10));
}

struct Batch {
  torch::Tensor x, y;
};

// Seconds per step over `steps` calls of `step`.
template <typename Step>
double time_steps(int steps, const std::vector<Batch>& batches, Step&& step) {
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < steps; ++i) step(batches[static_cast<size_t>(i) % batches.size()]);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / steps;
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

void run_case(const std::string& precision, int rounds, int steps, const std::vector<Batch>& batches) {
  const bool mixed = precision == "bf16-mixed";

  // Plain LibTorch: what a user writes without Fabric (autocast by hand for bf16-mixed).
  auto plain_model = make_mlp();
  torch::optim::Adam plain_optimizer(plain_model->parameters(), 1e-3);
  auto plain_step = [&](const Batch& batch) {
    plain_optimizer.zero_grad();
    torch::Tensor logits;
    if (mixed) {
      at::autocast::set_autocast_enabled(torch::kCPU, true);
      at::autocast::set_autocast_dtype(torch::kCPU, torch::kBFloat16);
      at::autocast::increment_nesting();
      logits = plain_model->forward(batch.x.to(torch::kBFloat16));
      if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
      at::autocast::set_autocast_enabled(torch::kCPU, false);
      logits = logits.to(torch::kFloat32);
    } else {
      logits = plain_model->forward(batch.x);
    }
    torch::nn::functional::cross_entropy(logits, batch.y).backward();
    plain_optimizer.step();
  };

  fabric::Fabric fabric({.accelerator = "cpu", .precision = precision});
  auto [model, optimizer] = fabric.setup(make_mlp(), [](auto params) {
    return std::make_shared<torch::optim::Adam>(params, 1e-3);
  });
  auto fabric_step = [&](const Batch& batch) {
    optimizer.zero_grad();
    fabric.backward(torch::nn::functional::cross_entropy(model(batch.x), batch.y));
    optimizer.step();
  };

  time_steps(steps, batches, plain_step);  // warm-up: allocator, autocast caches, page faults
  time_steps(steps, batches, fabric_step);
  // Paired rounds: each round times both sides back to back (alternating which goes first),
  // and the ratio is taken within the pair, so drift in machine speed cancels out.
  std::vector<double> plain_times, fabric_times, ratios;
  for (int round = 0; round < rounds; ++round) {
    double plain = 0, with_fabric = 0;
    if (round % 2 == 0) {
      plain = time_steps(steps, batches, plain_step);
      with_fabric = time_steps(steps, batches, fabric_step);
    } else {
      with_fabric = time_steps(steps, batches, fabric_step);
      plain = time_steps(steps, batches, plain_step);
    }
    plain_times.push_back(plain);
    fabric_times.push_back(with_fabric);
    ratios.push_back(plain / with_fabric);
  }
  const double ours = 1.0 / median(fabric_times), theirs = 1.0 / median(plain_times);
  std::printf(
      "{\"bench\": \"step_overhead\", \"case\": \"mlp-128-256-256-10-b64-%s\", \"metric\": \"steps_per_s\", "
      "\"ours\": %.1f, \"baseline\": \"plain-libtorch\", \"theirs\": %.1f, \"ratio\": %.4f, \"better\": \"higher\"}\n",
      precision.c_str(), ours, theirs, median(ratios));
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  int rounds = 21, steps = 1000;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--rounds") == 0) rounds = std::stoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--steps") == 0) steps = std::stoi(argv[i + 1]);
  }
  torch::set_num_threads(1);  // one core each: the two sides do not fight over threads
  std::vector<Batch> batches;
  for (int i = 0; i < 8; ++i) batches.push_back({torch::randn({64, 128}), torch::randint(0, 10, {64})});
  for (const char* precision : {"32-true", "bf16-mixed"}) run_case(precision, rounds, steps, batches);
  return 0;
}
