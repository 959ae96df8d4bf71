// One rank of the FSDP tests (fsdp_test.cc starts several with torchrun-style variables):
//   train KIND SHARDING PRECISION STEPS OUT [accumulate]
//       KIND "ddp" or "fsdp" (FSDPOptions: SHARDING, Linear layers auto-wrapped, "full"
//       checkpoints): STEPS steps of Adam with gradient clipping (max_norm 0.5), each rank
//       on its slice of every global batch; with accumulate, each step is two micro-batches,
//       the first inside no_backward_sync. Saves {"model", "optimizer"} to OUT.
//   save-sharded STEPS DIR FULL  trains STEPS steps under fsdp (FULL_SHARD), then saves the
//                                same state as a sharded folder DIR and as a full file FULL
//   reshard SRC DST TYPE         loads the sharded folder SRC (any world size) and saves it
//                                again to DST, as TYPE ("sharded" or "full")
//   load-sharded DIR             loads DIR: prints "loaded", or exits 3 printing "refused: "
//                                and the error, then whether the model was left unchanged
//   rules                        prints what Fabric's rules for sharded models answer: the
//                                units, this rank's piece sizes, setup_optimizers before
//                                setup_module, an unknown sharding strategy
//   limited KIND                 under an address-space limit (setrlimit RLIMIT_AS, as
//                                ulimit -v) of what the process had mapped plus 2.5x the
//                                parameters' bytes, less than training them takes unsharded
//                                (parameters, gradients, Adam's two moments: 4x): builds a
//                                25M-parameter MLP and trains 3 steps under KIND; prints
//                                "limit", then "trained: loss A -> B", or fails to allocate
#include <torch/torch.h>

#include <malloc.h>
#include <sys/resource.h>

#include <cstdlib>
#include <fstream>
#include <functional>
#include <iostream>
#include <string>

#include "fabric/fabric.h"
#include "fabric/strategies.h"
#include "fsdp_model.h"

namespace {

std::shared_ptr<fabric::Strategy> strategy_for(const std::string& kind, const std::string& sharding,
                                               const std::string& state_dict_type) {
  if (kind == "ddp") return std::make_shared<fabric::DDPStrategy>();
  return std::make_shared<fabric::FSDPStrategy>(
      fabric::FSDPOptions{.sharding_strategy = fabric::parse_sharding_strategy(sharding),
                          .auto_wrap_module_types = {"torch::nn::LinearImpl"},
                          .state_dict_type = state_dict_type});
}

struct Run {
  fabric::Fabric fabric;
  fabric::FabricModule<fsdp_model::NetImpl> model;
  fabric::FabricOptimizer optimizer;
};

Run start(const std::string& kind, const std::string& sharding, const std::string& precision,
          const std::string& state_dict_type) {
  fabric::Fabric fabric({.accelerator = "cpu", .strategy = strategy_for(kind, sharding, state_dict_type),
                         .precision = precision});
  fabric.launch();
  auto model = fabric.setup_module(fsdp_model::build_model());
  auto optimizer = fabric.setup_optimizers(
      std::make_shared<torch::optim::Adam>(model.parameters(), torch::optim::AdamOptions(1e-2)));
  return Run{std::move(fabric), std::move(model), std::move(optimizer)};
}

// This rank's rows of the global batch.
std::pair<torch::Tensor, torch::Tensor> my_rows(fabric::Fabric& fabric, int step, int micro = 0) {
  auto [x, y] = fsdp_model::global_batch(2 * step + micro, fabric.world_size());
  const auto begin = fabric.global_rank() * fsdp_model::kRowsPerRank;
  return {x.narrow(0, begin, fsdp_model::kRowsPerRank), y.narrow(0, begin, fsdp_model::kRowsPerRank)};
}

void train(Run& run, int steps, bool accumulate) {
  for (int step = 0; step < steps; ++step) {
    run.optimizer.zero_grad();
    if (accumulate) {
      auto skip_sync = run.fabric.no_backward_sync(run.model);
      auto [x, y] = my_rows(run.fabric, step, 1);
      run.fabric.backward(torch::nn::functional::cross_entropy(run.model(x), y));
    }
    auto [x, y] = my_rows(run.fabric, step);
    run.fabric.backward(torch::nn::functional::cross_entropy(run.model(x), y));
    run.fabric.clip_gradients(run.model, run.optimizer, {.max_norm = 0.5});
    run.optimizer.step();
  }
}

// The bytes of address space this process has mapped ("VmSize"), or had at most ("VmPeak").
std::int64_t mapped_bytes(const std::string& field = "VmSize") {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind(field + ":", 0) == 0) return std::stoll(line.substr(field.size() + 1)) * 1024;
  }
  throw std::runtime_error("no " + field + " in /proc/self/status");
}

// The message of what `action` throws, or "no error".
std::string error_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const std::exception& error) {
    return error.what();
  }
  return "no error";
}

int print_rules() {
  auto strategy = strategy_for("fsdp", "FULL_SHARD", "full");
  fabric::Fabric fabric({.accelerator = "cpu", .strategy = strategy});
  fabric.launch();
  auto early = fsdp_model::build_model();
  std::cout << "optimizer first: " << error_of([&] {
    fabric.setup_optimizers(std::make_shared<torch::optim::SGD>(early->parameters(), 0.1));
  }) << std::endl;
  auto model = fabric.setup_module(fsdp_model::build_model());
  for (const auto& unit : dynamic_cast<fabric::FSDPStrategy&>(*strategy).units(*model)) {
    std::cout << "unit:";
    for (const auto& name : unit) std::cout << " " << name;
    std::cout << std::endl;
  }
  std::cout << "pieces:";
  for (const auto& param : model.parameters()) std::cout << " " << param.numel();
  std::cout << std::endl;
  std::cout << "sharding: " << error_of([] { fabric::parse_sharding_strategy("HYBRID_SHARD"); }) << std::endl;
  return 0;
}

int train_under_limit(const std::string& kind) {
  // The address space must follow the tensors: no per-thread arenas reserving it, and every
  // large block its own mapping, returned when freed (glibc otherwise raises its mmap
  // threshold after the first large free and keeps later blocks in a heap that only grows).
  mallopt(M_ARENA_MAX, 1);
  mallopt(M_MMAP_THRESHOLD, 128 * 1024);
  fabric::Fabric fabric({.accelerator = "cpu", .strategy = strategy_for(kind, "FULL_SHARD", "full")});
  fabric.launch();
  {  // LibTorch's lazily loaded kernels map their memory now, before the limit is measured
    torch::nn::Linear warm(8, 8);
    warm(torch::randn({2, 8})).sum().backward();
  }
  constexpr int kLayers = 6, kWidth = 2048;
  const std::int64_t param_bytes = kLayers * (kWidth * kWidth + kWidth) * 4;
  const std::int64_t base = mapped_bytes();
  const std::int64_t limit = base + param_bytes * 5 / 2;
  const rlimit address_space{static_cast<rlim_t>(limit), static_cast<rlim_t>(limit)};
  if (::setrlimit(RLIMIT_AS, &address_space) != 0) throw std::runtime_error("setrlimit failed");
  std::cout << "limit: " << param_bytes * 5 / 2 / 1000000 << " MB over what was mapped; unsharded training needs "
            << param_bytes * 4 / 1000000 << " MB" << std::endl;
  torch::manual_seed(0);
  torch::nn::Sequential layers;
  for (int i = 0; i < kLayers; ++i) layers->push_back(torch::nn::Linear(kWidth, kWidth));
  auto model = fabric.setup_module(layers);
  auto optimizer = fabric.setup_optimizers(
      std::make_shared<torch::optim::Adam>(model.parameters(), torch::optim::AdamOptions(1e-5)));
  const torch::Tensor x = torch::randn({4, kWidth}), y = torch::randn({4, kWidth});
  std::vector<double> losses;
  for (int step = 0; step < 3; ++step) {
    optimizer.zero_grad();
    torch::Tensor loss = torch::mse_loss(model(x), y);
    fabric.backward(loss);
    optimizer.step();
    losses.push_back(loss.item<double>());
  }
  std::cout << "trained: loss " << losses.front() << " -> " << losses.back() << "; at most "
            << (mapped_bytes("VmPeak") - base) / 1000000 << " MB over what was mapped" << std::endl;
  return losses.back() < losses.front() ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::string scenario = argc > 1 ? argv[1] : "";
    if (scenario == "train" && argc >= 7) {
      Run run = start(argv[2], argv[3], argv[4], "full");
      train(run, std::atoi(argv[5]), argc > 7 && std::string(argv[7]) == "accumulate");
      run.fabric.save(argv[6], {{"model", run.model}, {"optimizer", run.optimizer}});
      return 0;
    }
    if (scenario == "save-sharded" && argc == 5) {
      Run run = start("fsdp", "FULL_SHARD", "32-true", "sharded");
      train(run, std::atoi(argv[2]), false);
      const fabric::State state{{"model", run.model}, {"optimizer", run.optimizer}, {"step", 7}};
      run.fabric.save(argv[3], state);
      dynamic_cast<fabric::FSDPStrategy&>(run.fabric.strategy()).save_checkpoint(argv[4], state, {}, "full");
      run.fabric.barrier();
      return 0;
    }
    if (scenario == "reshard" && argc == 5) {
      Run run = start("fsdp", "FULL_SHARD", "32-true", argv[4]);
      fabric::State state{{"model", run.model}, {"optimizer", run.optimizer}, {"step", 0}};
      run.fabric.load(argv[2], state);
      if (state.get<int>("step") != 7) throw std::runtime_error("step was not restored");
      run.fabric.save(argv[3], state);
      return 0;
    }
    if (scenario == "rules") return print_rules();
    if (scenario == "limited" && argc == 3) return train_under_limit(argv[2]);
    if (scenario == "load-sharded" && argc == 3) {
      Run run = start("fsdp", "FULL_SHARD", "32-true", "sharded");
      const auto before = run.model->scale.detach().clone();
      fabric::State state{{"model", run.model}, {"optimizer", run.optimizer}};
      try {
        run.fabric.load(argv[2], state);
      } catch (const fabric::CheckpointError& error) {
        const bool unchanged = run.model->scale.detach().equal(before);
        std::cout << "refused: " << error.what() << "\nmodel " << (unchanged ? "unchanged" : "CHANGED") << std::endl;
        return 3;
      }
      std::cout << "loaded" << std::endl;
      return 0;
    }
    std::cerr << "usage: see the comment at the top of fsdp_worker.cc" << std::endl;
    return 2;
  } catch (const std::exception& error) {
    std::cout << "ERROR: " << error.what() << std::endl;  // stdout: the file the test reads
    return 1;
  }
}
