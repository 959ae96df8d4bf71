// bench/step_overhead: the same training step (zero_grad, forward, loss, backward, Adam
// step) on the same small MLP, through Fabric and through plain LibTorch, interleaved in
// one process so machine noise hits both alike. Prints one JSON line per precision case;
// ratio = Fabric steps/s ÷ plain steps/s, the median over paired rounds (1.0 = no
// overhead, 0.98 = 2% slower).
//
// Beside the timed ratio, the instructions of a training step: the benchmark runs itself
// under callgrind (`--counted-steps N` of each side, after warm-up, with instrumentation on
// only around them), a count that does not depend on the machine's noise.
//   bench/run step_overhead [--rounds 21] [--steps 1000] [--callgrind] [--counted-steps 10]
#include <ATen/autocast_mode.h>
#include <torch/torch.h>
#include <unistd.h>
#include <valgrind/callgrind.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
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

// Both sides of one precision case: the plain LibTorch step and Fabric's.
struct Sides {
  explicit Sides(const std::string& precision)
      : mixed(precision == "bf16-mixed"),
        plain_model(make_mlp()),
        plain_optimizer(plain_model->parameters(), 1e-3),
        fabric({.accelerator = "cpu", .precision = precision}) {
    auto [module, fabric_optimizer] = fabric.setup(make_mlp(), [](auto params) {
      return std::make_shared<torch::optim::Adam>(params, 1e-3);
    });
    model = std::make_unique<fabric::FabricModule<torch::nn::SequentialImpl>>(std::move(module));
    optimizer = std::make_unique<fabric::FabricOptimizer>(std::move(fabric_optimizer));
  }

  // Plain LibTorch: what a user writes without Fabric (autocast by hand for bf16-mixed).
  void plain_step(const Batch& batch) {
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
  }

  void fabric_step(const Batch& batch) {
    optimizer->zero_grad();
    fabric.backward(torch::nn::functional::cross_entropy((*model)(batch.x), batch.y));
    optimizer->step();
  }

  bool mixed;
  torch::nn::Sequential plain_model;
  torch::optim::Adam plain_optimizer;
  fabric::Fabric fabric;
  std::unique_ptr<fabric::FabricModule<torch::nn::SequentialImpl>> model;
  std::unique_ptr<fabric::FabricOptimizer> optimizer;
};

std::string case_name(const std::string& precision) { return "mlp-128-256-256-10-b64-" + precision; }

void run_case(const std::string& precision, int rounds, int steps, const std::vector<Batch>& batches) {
  Sides sides(precision);
  auto plain_step = [&](const Batch& batch) { sides.plain_step(batch); };
  auto fabric_step = [&](const Batch& batch) { sides.fabric_step(batch); };

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
      "{\"bench\": \"step_overhead\", \"case\": \"%s\", \"metric\": \"steps_per_s\", "
      "\"ours\": %.1f, \"baseline\": \"plain-libtorch\", \"theirs\": %.1f, \"ratio\": %.4f, \"better\": \"higher\"}\n",
      case_name(precision).c_str(), ours, theirs, median(ratios));
  std::fflush(stdout);
}

// Under callgrind (started by count_instructions): `counted` steps of each side after a
// warm-up, each side's instructions dumped under its own name.
void counted_steps(int counted, const std::vector<Batch>& batches) {
  for (const char* precision : {"32-true", "bf16-mixed"}) {
    Sides sides(precision);
    for (int i = 0; i < 50; ++i) sides.plain_step(batches[i % batches.size()]), sides.fabric_step(batches[i % batches.size()]);
    // Named strings: the macro is a statement expression, and a temporary made in its
    // argument dies at the end of the inner statement that stores the pointer, before the
    // request reads it (the first dumps came out named with garbage).
    const std::string plain_dump = std::string("plain ") + precision, fabric_dump = std::string("fabric ") + precision;
    CALLGRIND_START_INSTRUMENTATION;
    CALLGRIND_ZERO_STATS;
    for (int i = 0; i < counted; ++i) sides.plain_step(batches[i % batches.size()]);
    CALLGRIND_DUMP_STATS_AT(plain_dump.c_str());
    for (int i = 0; i < counted; ++i) sides.fabric_step(batches[i % batches.size()]);
    CALLGRIND_DUMP_STATS_AT(fabric_dump.c_str());
    CALLGRIND_STOP_INSTRUMENTATION;
  }
}

// Callgrind's files: `prefix` at exit, `prefix.N` for the N-th dump.
std::string dump_file(const std::string& prefix, int part) {
  std::string path = prefix;
  if (part > 0) {
    path += '.';
    path += std::to_string(part);
  }
  return path;
}

// The instruction count of the dump whose trigger names `what` ("summary:" of its file).
double dumped_instructions(const std::string& prefix, const std::string& what) {
  for (int part = 1; part <= 8; ++part) {
    std::ifstream dump(dump_file(prefix, part));
    std::string line, trigger;
    double total = -1;
    while (std::getline(dump, line)) {
      if (line.rfind("desc: Trigger:", 0) == 0) trigger = line;
      if (line.rfind("summary:", 0) == 0 || line.rfind("totals:", 0) == 0) total = std::stod(line.substr(line.find(':') + 1));
    }
    if (trigger.size() >= what.size() && trigger.compare(trigger.size() - what.size(), what.size(), what) == 0) {
      return total;
    }
  }
  return -1;
}

// Runs this benchmark again under callgrind and prints each case's instructions per step.
void count_instructions(const char* self, int counted) {
  const std::string prefix = "/tmp/fabric-step-callgrind-" + std::to_string(::getpid());
  const std::string command = "valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=" + prefix +
                              " '" + self + "' --counted-steps-inside " + std::to_string(counted) + " >/dev/null 2>&1";
  if (std::system(command.c_str()) != 0) {
    std::fprintf(stderr, "callgrind failed: %s (is valgrind installed? scripts/bootstrap installs it)\n", command.c_str());
    return;
  }
  for (const char* precision : {"32-true", "bf16-mixed"}) {
    const double plain = dumped_instructions(prefix, std::string("plain ") + precision) / counted;
    const double ours = dumped_instructions(prefix, std::string("fabric ") + precision) / counted;
    if (plain <= 0 || ours <= 0) {
      std::fprintf(stderr, "no callgrind dump for %s under %s.*: nothing to report\n", precision, prefix.c_str());
      continue;
    }
    std::printf(
        "{\"bench\": \"step_overhead\", \"case\": \"%s-instructions\", \"metric\": \"instructions_per_step\", "
        "\"ours\": %.0f, \"baseline\": \"plain-libtorch\", \"theirs\": %.0f, \"ratio\": %.4f, \"steps\": %d, "
        "\"better\": \"lower\"}\n",
        case_name(precision).c_str(), ours, plain, ours / plain, counted);
    std::fflush(stdout);
  }
  for (int part = 0; part <= 8; ++part) std::remove(dump_file(prefix, part).c_str());
}

}  // namespace

int main(int argc, char** argv) {
  int rounds = 21, steps = 1000, counted = 10, counted_inside = 0;
  bool callgrind = false;
  for (int i = 1; i < argc; ++i) {
    const bool has_value = i + 1 < argc;
    if (std::strcmp(argv[i], "--callgrind") == 0) callgrind = true;
    if (!has_value) continue;
    if (std::strcmp(argv[i], "--rounds") == 0) rounds = std::stoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--steps") == 0) steps = std::stoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--counted-steps") == 0) counted = std::stoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--counted-steps-inside") == 0) counted_inside = std::stoi(argv[i + 1]);
  }
  torch::set_num_threads(1);  // one core each: the two sides do not fight over threads
  std::vector<Batch> batches;
  for (int i = 0; i < 8; ++i) batches.push_back({torch::randn({64, 128}), torch::randint(0, 10, {64})});
  if (counted_inside > 0) {
    counted_steps(counted_inside, batches);
    return 0;
  }
  for (const char* precision : {"32-true", "bf16-mixed"}) run_case(precision, rounds, steps, batches);
  if (callgrind) count_instructions(argv[0], counted);
  return 0;
}
