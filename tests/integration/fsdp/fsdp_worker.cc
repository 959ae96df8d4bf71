// One rank of the FSDP tests (fsdp_test.cc starts several with torchrun-style variables):
//   train KIND SHARDING PRECISION STEPS OUT [accumulate|uneven]
//       KIND "ddp" or "fsdp" (FSDPOptions: SHARDING, Linear layers auto-wrapped, "full"
//       checkpoints): STEPS steps of Adam with gradient clipping (max_norm 0.5), each rank
//       on its slice of every global batch; with accumulate, every rank first backwards one
//       micro-batch inside no_backward_sync, with uneven rank r 1 + r of them (and either
//       one more before the first zero_grad, which drops it). Saves {"model", "optimizer"}.
//   save-sharded STEPS DIR FULL [SHARDING]
//                                trains STEPS steps under fsdp (FULL_SHARD unless SHARDING),
//                                then saves the same state as a sharded folder DIR and as a
//                                full file FULL
//   reshard SRC DST TYPE         loads the sharded folder SRC (any world size) and saves it
//                                again to DST, as TYPE ("sharded" or "full")
//   load-sharded DIR             loads DIR: prints "loaded", or exits 3 printing "refused: "
//                                and the error, then whether the model was left unchanged
//   rules                        prints what Fabric's rules for sharded models answer: the
//                                units, this rank's piece sizes, setup_optimizers before
//                                setup_module, an unknown sharding strategy, tied parameters,
//                                loss.backward() instead of fabric.backward, a sharded
//                                model's optimizer in a nested state
//   gan KIND STEPS OUT           a generator and a discriminator, each its own set-up model
//                                and optimizer, trained as a GAN is (the discriminator's
//                                backward and step between the generator's forward and its
//                                backward); saves both to OUT
//   windows                      a forward without gradients inside an open window, and a
//                                forward that throws, each followed by a training step;
//                                prints what each left
//   save-failures DIR OTHER      saves DIR, trains a step, saves DIR again with rank 1's
//                                write failing; prints the error, whether a partial folder
//                                was left and whether loading DIR restores the first save;
//                                then saves over OTHER (a folder that is no checkpoint)
//   limited KIND                 under an address-space limit (setrlimit RLIMIT_AS, as
//                                ulimit -v) of what the process had mapped plus 2.5x the
//                                parameters' bytes, less than training them takes unsharded
//                                (parameters, gradients, Adam's two moments: 4x): builds a
//                                25M-parameter MLP and trains 3 steps under KIND; prints
//                                "limit", then "trained: loss A -> B", or fails to allocate
//   scaler REDUCE                two steps of a GradScaler (on the CPU: "16-mixed", which has
//                                one, runs on CUDA only), made sharded by
//                                FSDPStrategy::shard_grad_scaler when REDUCE is "sharded"
//                                ("local": not); the second step's gradient is inf in the
//                                last rank's shard only. Prints for each step whether this
//                                rank stepped, then the scale and whether that step changed
//                                the parameters
#include <torch/torch.h>

#include <dirent.h>
#include <malloc.h>
#include <sys/resource.h>

#include <cstdlib>
#include <fstream>
#include <functional>
#include <iostream>
#include <limits>
#include <string>

#include "fabric/checkpoint_io.h"
#include "fabric/fabric.h"
#include "fabric/grad_scaler.h"
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
  auto [x, y] = fsdp_model::global_batch(8 * step + micro, fabric.world_size());
  const auto begin = fabric.global_rank() * fsdp_model::kRowsPerRank;
  return {x.narrow(0, begin, fsdp_model::kRowsPerRank), y.narrow(0, begin, fsdp_model::kRowsPerRank)};
}

// How a step accumulates: not at all, two micro-batches on every rank, or 1 + r local ones
// on rank r before the synchronised one.
enum class Accumulate { kNo, kEven, kUneven };

Accumulate accumulate_mode(const std::string& word) {
  if (word == "accumulate") return Accumulate::kEven;
  if (word == "uneven") return Accumulate::kUneven;
  return Accumulate::kNo;
}

void train(Run& run, int steps, Accumulate accumulate = Accumulate::kNo) {
  const auto local_backward = [&](int step, int micro) {
    auto skip_sync = run.fabric.no_backward_sync(run.model);
    auto [x, y] = my_rows(run.fabric, step, micro);
    run.fabric.backward(torch::nn::functional::cross_entropy(run.model(x), y));
  };
  if (accumulate != Accumulate::kNo) local_backward(steps, 0);  // abandoned: zero_grad drops it
  // Uneven (NO_SHARD: a forward communicates nothing there): only a local backward that
  // really does not communicate lets the ranks' collectives still pair up.
  const int local_batches = accumulate == Accumulate::kNo     ? 0
                            : accumulate == Accumulate::kEven ? 1
                                                              : 1 + run.fabric.global_rank();
  for (int step = 0; step < steps; ++step) {
    run.optimizer.zero_grad();
    for (int micro = 1; micro <= local_batches; ++micro) local_backward(step, micro);
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

int step_with_scaler(bool sharded) {
  Run run = start("fsdp", "FULL_SHARD", "32-true", "full");
  fabric::GradScaler scaler(torch::kCPU);
  if (sharded) dynamic_cast<fabric::FSDPStrategy&>(run.fabric.strategy()).shard_grad_scaler(scaler);
  const bool last_rank = run.fabric.global_rank() == run.fabric.world_size() - 1;
  std::vector<torch::Tensor> before;
  for (int step = 0; step < 2; ++step) {
    run.optimizer.zero_grad();
    auto [x, y] = my_rows(run.fabric, step);
    run.fabric.backward(scaler.scale(torch::nn::functional::cross_entropy(run.model(x), y)));
    if (step == 1 && last_rank) {
      for (auto& param : run.model.parameters()) {
        if (param.grad().defined() && param.grad().numel() > 0) {
          param.grad().view(-1)[0] = std::numeric_limits<float>::infinity();
          break;
        }
      }
    }
    before.clear();
    for (const auto& param : run.model.parameters()) before.push_back(param.detach().clone());
    std::cout << "step " << step << ": " << (scaler.step(run.optimizer.optimizer()) ? "stepped" : "skipped")
              << std::endl;
    scaler.update();
  }
  bool unchanged = true;
  const auto params = run.model.parameters();
  for (std::size_t i = 0; i < params.size(); ++i) unchanged = unchanged && params[i].detach().equal(before[i]);
  std::cout << "scale: " << scaler.get_scale() << "\nlast step changed parameters: " << (unchanged ? "no" : "yes")
            << std::endl;
  return 0;
}

std::vector<torch::Tensor> snapshot(const std::vector<torch::Tensor>& params) {
  std::vector<torch::Tensor> copies;
  for (const auto& param : params) copies.push_back(param.detach().clone());
  return copies;
}

bool equal(const std::vector<torch::Tensor>& params, const std::vector<torch::Tensor>& copies) {
  for (std::size_t i = 0; i < params.size(); ++i) {
    if (!params[i].detach().equal(copies[i])) return false;
  }
  return true;
}

// A parameter of the root that is also its child's (an output layer tied to an embedding).
struct TiedImpl : torch::nn::Module {
  torch::nn::Linear layer = register_module("layer", torch::nn::Linear(4, 4));
  torch::Tensor shared = register_parameter("shared", layer->weight);
};

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
  auto [x, y] = my_rows(fabric, 0);
  std::cout << "loss.backward(): "
            << error_of([&, &x = x, &y = y] { torch::nn::functional::cross_entropy(model(x), y).backward(); })
            << std::endl;
  std::cout << "tied: " << error_of([&] { fabric.setup_module(std::make_shared<TiedImpl>()); }) << std::endl;
  auto optimizer = fabric.setup_optimizers(std::make_shared<torch::optim::SGD>(model.parameters(), 0.1));
  const fabric::State nested{{"model", model}, {"inner", fabric::State{{"optimizer", optimizer}}}};
  std::cout << "nested optimizer: " << error_of([&] { fabric.save("/nonexistent/ckpt", nested); }) << std::endl;
  return 0;
}

// The GAN's discriminator: 4 generated features -> 1 score.
torch::nn::Sequential build_discriminator() {
  torch::manual_seed(1);
  return torch::nn::Sequential(torch::nn::Linear(4, 8), torch::nn::Tanh(), torch::nn::Linear(8, 1));
}

int train_gan(const std::string& kind, int steps, const std::string& out) {
  fabric::Fabric fabric({.accelerator = "cpu", .strategy = strategy_for(kind, "FULL_SHARD", "full")});
  fabric.launch();
  auto generator = fabric.setup_module(fsdp_model::build_model());
  auto discriminator = fabric.setup_module(build_discriminator());
  auto generator_optimizer = fabric.setup_optimizers(std::make_shared<torch::optim::Adam>(
      generator.parameters(), torch::optim::AdamOptions(1e-2)));
  auto discriminator_optimizer = fabric.setup_optimizers(std::make_shared<torch::optim::Adam>(
      discriminator.parameters(), torch::optim::AdamOptions(1e-2)));
  for (int step = 0; step < steps; ++step) {
    auto [noise, labels] = my_rows(fabric, step);
    const torch::Tensor fake = generator(noise);
    discriminator_optimizer.zero_grad();
    fabric.backward(discriminator(fake.detach()).pow(2).mean());
    discriminator_optimizer.step();
    generator_optimizer.zero_grad();
    fabric.backward((discriminator(fake) - 1).pow(2).mean());
    generator_optimizer.step();
  }
  fabric.save(out, {{"generator", generator},
                    {"discriminator", discriminator},
                    {"generator_optimizer", generator_optimizer},
                    {"discriminator_optimizer", discriminator_optimizer}});
  return 0;
}

int open_windows() {
  Run run = start("fsdp", "FULL_SHARD", "32-true", "full");
  auto step = [&](int index) {
    run.optimizer.zero_grad();
    auto [x, y] = my_rows(run.fabric, index);
    const torch::Tensor logits = run.model(x);
    {  // e.g. a metric of the same model, without gradients, before the loss's backward
      torch::NoGradGuard no_grad;
      run.model(x);
    }
    run.fabric.backward(torch::nn::functional::cross_entropy(logits, y));
    run.optimizer.step();
  };
  const auto before = snapshot(run.model.parameters());
  std::cout << "no-grad forward in the window: " << error_of([&] { step(0); }) << std::endl;
  std::cout << "trained: " << (equal(run.model.parameters(), before) ? "no" : "yes") << std::endl;
  std::cout << "failed forward: " << error_of([&] { run.model(torch::zeros({2, 5})); }) << std::endl;
  std::cout << "scale outside forward: " << run.model->scale.numel() << " elements" << std::endl;
  std::cout << "step after it: " << error_of([&] { step(1); }) << std::endl;
  return 0;
}

// Fails the save of one rank file, as a full disk would.
class FailingCheckpointIO : public fabric::TorchCheckpointIO {
 public:
  bool fail = false;
  void save_checkpoint(const c10::IValue& checkpoint, const std::string& path) override {
    if (fail && path.size() > 10 && path.compare(path.size() - 10, 10, "/rank-1.pt") == 0) {
      throw fabric::CheckpointError("No space left on device (the test's)");
    }
    fabric::TorchCheckpointIO::save_checkpoint(checkpoint, path);
  }
};

bool partial_left(const std::string& path) {
  const std::string parent = path.substr(0, path.find_last_of('/'));
  const std::string prefix = path.substr(path.find_last_of('/') + 1) + ".partial-";
  DIR* folder = ::opendir(parent.c_str());
  bool found = false;
  while (const dirent* entry = folder ? ::readdir(folder) : nullptr) {
    found = found || std::string(entry->d_name).rfind(prefix, 0) == 0;
  }
  if (folder) ::closedir(folder);
  return found;
}

int save_failures(const std::string& path, const std::string& other) {
  auto io = std::make_shared<FailingCheckpointIO>();
  fabric::Fabric fabric({.accelerator = "cpu", .strategy = strategy_for("fsdp", "FULL_SHARD", "sharded"),
                         .plugins = {io}});
  fabric.launch();
  auto model = fabric.setup_module(fsdp_model::build_model());
  auto optimizer = fabric.setup_optimizers(
      std::make_shared<torch::optim::Adam>(model.parameters(), torch::optim::AdamOptions(1e-2)));
  Run run{std::move(fabric), std::move(model), std::move(optimizer)};
  train(run, 1);
  const fabric::State state{{"model", run.model}, {"optimizer", run.optimizer}};
  run.fabric.save(path, state);
  const auto first = snapshot(run.model.parameters());
  train(run, 1);
  io->fail = true;
  std::cout << "second save: " << error_of([&] { run.fabric.save(path, state); }) << std::endl;
  io->fail = false;
  run.fabric.barrier();
  std::cout << "partial left: " << (partial_left(path) ? "yes" : "no") << std::endl;
  fabric::State loaded = state;
  run.fabric.load(path, loaded);
  std::cout << "restored first save: " << (equal(run.model.parameters(), first) ? "yes" : "no") << std::endl;
  std::cout << "save over a folder: " << error_of([&] { run.fabric.save(other, state); }) << std::endl;
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
      train(run, std::atoi(argv[5]), accumulate_mode(argc > 7 ? argv[7] : ""));
      run.fabric.save(argv[6], {{"model", run.model}, {"optimizer", run.optimizer}});
      return 0;
    }
    if (scenario == "save-sharded" && (argc == 5 || argc == 6)) {
      Run run = start("fsdp", argc == 6 ? argv[5] : "FULL_SHARD", "32-true", "sharded");
      train(run, std::atoi(argv[2]));
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
    if (scenario == "gan" && argc == 5) return train_gan(argv[2], std::atoi(argv[3]), argv[4]);
    if (scenario == "windows") return open_windows();
    if (scenario == "save-failures" && argc == 4) return save_failures(argv[2], argv[3]);
    if (scenario == "scaler" && argc == 3) return step_with_scaler(std::string(argv[2]) == "sharded");
    if (scenario == "limited" && argc == 3) return train_under_limit(argv[2]);
    if (scenario == "load-sharded" && argc == 3) {
      Run run = start("fsdp", "FULL_SHARD", "32-true", "sharded");
      const auto before = snapshot(run.model.parameters());
      fabric::State state{{"model", run.model}, {"optimizer", run.optimizer}};
      try {
        run.fabric.load(argv[2], state);
      } catch (const fabric::CheckpointError& error) {
        const bool unchanged = equal(run.model.parameters(), before);
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
