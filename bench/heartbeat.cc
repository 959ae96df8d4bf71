// bench/heartbeat: what fabricd's hang detection costs a training step. Under fabricd,
// every step records progress three times (forward, backward as a busy phase, optimizer
// step); heartbeat RPCs go out from a background thread at most every timeout / 4, so the
// recording is the only cost on the training thread. Measured in one run: the recording
// (a reporter with no reachable launcher, so only the hot path runs) against the plain
// LibTorch step of bench/step_overhead's MLP. ratio = recording ns / step ns, lower is
// better; a ratio of 1e-4 is 0.01% of the step.
//   bench/run heartbeat [--steps 2000]
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "fabric/worker/progress_reporter.h"

namespace {

using Clock = std::chrono::steady_clock;

double plain_step_ns(int steps) {
  torch::manual_seed(0);
  torch::nn::Sequential model(torch::nn::Linear(128, 256), torch::nn::ReLU(), torch::nn::Linear(256, 256),
                              torch::nn::ReLU(), torch::nn::Linear(256, 10));
  torch::optim::Adam optimizer(model->parameters(), torch::optim::AdamOptions(1e-3));
  torch::Tensor x = torch::randn({64, 128}), y = torch::randint(0, 10, {64});
  auto step = [&] {
    optimizer.zero_grad();
    torch::nn::functional::cross_entropy(model->forward(x), y).backward();
    optimizer.step();
  };
  for (int i = 0; i < 50; ++i) step();  // warm-up
  const auto start = Clock::now();
  for (int i = 0; i < steps; ++i) step();
  return std::chrono::duration<double, std::nano>(Clock::now() - start).count() / steps;
}

double recording_ns(fabric::worker::ProgressReporter& reporter, int iterations) {
  const auto start = Clock::now();
  for (int i = 0; i < iterations; ++i) {
    reporter.progress("train");            // FabricModule::forward
    { auto busy = reporter.busy("backward"); }  // Fabric::backward
    reporter.step();                       // FabricOptimizer::step
  }
  return std::chrono::duration<double, std::nano>(Clock::now() - start).count() / iterations;
}

}  // namespace

int main(int argc, char** argv) {
  int steps = 2000;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::string(argv[i]) == "--steps") steps = std::atoi(argv[i + 1]);
  }
  torch::set_num_threads(1);
  // Port 1 on loopback refuses at once: heartbeats fail in the background, as they would
  // for a launcher that is gone, and the training thread never waits for them.
  auto client = std::make_shared<fabric::worker::RendezvousClient>(
      fabric::worker::RankIdentity{.endpoint = "127.0.0.1:1", .job_id = "bench"});
  fabric::worker::ProgressReporter reporter(client);
  const double step = plain_step_ns(steps);
  const double recording = recording_ns(reporter, 1'000'000);
  std::printf(
      "{\"bench\": \"heartbeat\", \"case\": \"progress-recording-per-step\", \"metric\": \"ns\", \"ours\": %.1f, "
      "\"baseline\": \"plain-libtorch-mlp-step\", \"theirs\": %.0f, \"ratio\": %.6f, \"better\": \"lower\"}\n",
      recording, step, recording / step);
  std::fflush(stdout);
  std::_Exit(0);  // the reporter's thread may be inside a failing heartbeat: do not wait for it
}
