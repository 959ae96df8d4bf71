// One rank of the DDP tests (ddp_test.cc starts several with torchrun-style variables):
//   train PRECISION STEPS OUT [OPT]  DDP training, each rank on its slice of every global
//                                    batch; rank 0 saves the final model to OUT. OPT are
//                                    DDPOptions: static_graph, gradient_as_bucket_view,
//                                    bucket_cap_mb=MB, backend=NAME; prints "grads in one
//                                    storage: yes|no" after the last backward
//   buckets MB                       a 6-layer model under bucket_cap_mb=MB: prints
//                                    "buckets N" after two steps
//   buffers on|off                   broadcast_buffers: rank 1 sets its buffer to 1 after
//                                    setup, then one training forward; prints "buffer V"
//   static-unused                    a parameter that never gets a gradient, under
//                                    static_graph: three steps, exit 0
//   timeout MS                       DDPOptions::timeout=MS; rank 1 never joins the
//                                    all_reduce: rank 0 exits 6 with "COLLECTIVE_ERROR: ..."
//   accumulate OUT                   one step from two micro-batches, the first inside
//                                    no_backward_sync; rank 0 saves the model to OUT
//   unused                           a parameter that never gets a gradient: exit 4 with
//                                    "USAGE_ERROR: ..." on the step after
//   unused-allowed                   the same under "ddp_find_unused_parameters_true": exit 0
//   launch-and-fail                  started alone: launch() starts rank 1, then rank 0 throws
//                                    while rank 1 waits in a collective; exit 5
//   flaky [after-standbys]           under fabricd or torchrun: in generation 0, rank 1
//                                    SIGKILLs itself after the first barrier (once the
//                                    launcher's warm standbys wait, with after-standbys);
//                                    later generations succeed. Each rank prints its pid
//                                    and its parent's.
//   fabric-collectives DIR           Fabric's broadcast / all_reduce / all_gather /
//                                    rank_zero_first; exit 1 on the first wrong value
//   misbehave HOW                    under fabricd: 40 DDP steps, but in generation 0 rank 1
//                                    stops at step 5 after printing "misbehaving at <ms>"
//                                    (system clock): HOW = spin (an endless loop), stop
//                                    (SIGSTOP itself) or throw (an uncaught exception)
//   late-join                        under fabricd: rank 1 sleeps 60 s before it connects
#include <torch/torch.h>

#include <ATen/CPUGeneratorImpl.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <thread>
#include <fstream>
#include <iostream>

#include "ddp_reference.h"
#include "support/warm_standbys.h"
#include "fabric/fabric.h"
#include "fabric/strategies.h"

// A module whose forward never touches `unused`.
struct PartlyUsed : torch::nn::Module {
  torch::nn::Linear used = register_module("used", torch::nn::Linear(4, 2));
  torch::nn::Linear unused = register_module("unused", torch::nn::Linear(4, 2));
  torch::Tensor forward(const torch::Tensor& x) { return used(x); }
};

// Exits 1 naming what was wrong.
void require(bool ok, const char* what) {
  if (!ok) {
    std::cerr << "WRONG: " << what << std::endl;
    std::exit(1);
  }
}

// A module with one buffer that forward leaves alone, to see broadcast_buffers at work.
struct WithBuffer : torch::nn::Module {
  torch::nn::Linear linear = register_module("linear", torch::nn::Linear(4, 2));
  torch::Tensor marker = register_buffer("marker", torch::zeros({3}));
  torch::Tensor forward(const torch::Tensor& x) { return linear(x); }
};

// DDPOptions from "static_graph", "gradient_as_bucket_view", "bucket_cap_mb=MB", "backend=NAME".
fabric::DDPOptions ddp_options(char** first, char** last) {
  fabric::DDPOptions options;
  for (; first != last; ++first) {
    const std::string option = *first;
    if (option == "static_graph") options.static_graph = true;
    else if (option == "gradient_as_bucket_view") options.gradient_as_bucket_view = true;
    else if (option.starts_with("bucket_cap_mb=")) options.bucket_cap_mb = std::stod(option.substr(14));
    else if (option.starts_with("backend=")) options.process_group_backend = option.substr(8);
    else throw std::invalid_argument("unknown DDP option " + option);
  }
  return options;
}

// Whether every parameter's gradient lies in one allocation (the reducer's bucket).
template <typename Model>
bool grads_share_storage(const Model& model) {
  const auto params = model.parameters();
  for (const auto& param : params) {
    if (!param.grad().defined() || !param.grad().storage().is_alias_of(params.front().grad().storage())) return false;
  }
  return true;
}

// The restart generation, as fabricd or torchrun numbers it.
int generation() {
  for (const char* name : {"FABRICD_RESTART_COUNT", "TORCHELASTIC_RESTART_COUNT"}) {
    if (const char* value = std::getenv(name)) return std::atoi(value);
  }
  return 0;
}

void misbehave(const std::string& how) {
  const auto now = std::chrono::system_clock::now().time_since_epoch();
  std::cout << "misbehaving at " << std::chrono::duration_cast<std::chrono::milliseconds>(now).count() << std::endl;
  if (how == "spin") {
    for (volatile bool forever = true; forever;) {
    }
  } else if (how == "stop") {
    ::raise(SIGSTOP);
  } else {
    throw std::runtime_error("injected failure at step 5");
  }
}

// One DDP step on this rank's slice of the global batch of `step`.
template <typename Model>
void train_step(fabric::Fabric& fabric, Model& model, fabric::FabricOptimizer& optimizer, int step) {
  const int rank = fabric.global_rank();
  auto [x, y] = ddp_reference::global_batch(step, fabric.world_size());
  optimizer.zero_grad();
  auto local_x = x.narrow(0, rank * ddp_reference::kRowsPerRank, ddp_reference::kRowsPerRank);
  auto local_y = y.narrow(0, rank * ddp_reference::kRowsPerRank, ddp_reference::kRowsPerRank);
  const torch::Tensor loss = torch::nn::functional::cross_entropy(model(local_x), local_y);
  fabric.backward(loss);
  optimizer.step();
  fabric.log("loss", loss.detach());  // what fabricd's status page plots
}

int main(int argc, char** argv) {
  const std::string scenario = argv[1];
  try {
    if (scenario == "train" || scenario == "accumulate") {
      const std::string precision = scenario == "train" ? argv[2] : "32-true";
      auto strategy = std::make_shared<fabric::DDPStrategy>(
          scenario == "train" ? ddp_options(argv + std::min(argc, 5), argv + argc) : fabric::DDPOptions{});
      fabric::Fabric fabric({.accelerator = "cpu", .strategy = strategy, .precision = precision});
      fabric.launch();
      auto [model, optimizer] = fabric.setup(ddp_reference::build_model(), [](auto params) {
        return std::make_shared<torch::optim::SGD>(params, torch::optim::SGDOptions(0.1).momentum(0.9));
      });
      const int rank = fabric.global_rank(), world = fabric.world_size();
      if (scenario == "train") {
        const int steps = std::stoi(argv[3]);
        for (int step = 0; step < steps; ++step) train_step(fabric, model, optimizer, step);
        std::cout << "grads in one storage: " << (grads_share_storage(model) ? "yes" : "no") << std::endl;
        fabric.save(argv[4], {{"model", model}});
      } else {
        // Two micro-batches per rank: rows [2r, 2r+1] halves of rank r's slice of step 0.
        auto [x, y] = ddp_reference::global_batch(0, world);
        const int half = ddp_reference::kRowsPerRank / 2;
        optimizer.zero_grad();
        for (int micro = 0; micro < 2; ++micro) {
          auto micro_x = x.narrow(0, rank * ddp_reference::kRowsPerRank + micro * half, half);
          auto micro_y = y.narrow(0, rank * ddp_reference::kRowsPerRank + micro * half, half);
          auto skip_sync = fabric.no_backward_sync(model, /*enabled=*/micro == 0);
          fabric.backward(torch::nn::functional::cross_entropy(model(micro_x), micro_y) / 2);
        }
        optimizer.step();
        fabric.save(argv[2], {{"model", model}});
      }
    } else if (scenario == "buckets") {
      auto strategy = std::make_shared<fabric::DDPStrategy>(fabric::DDPOptions{.bucket_cap_mb = std::stod(argv[2])});
      fabric::Fabric fabric({.accelerator = "cpu", .strategy = strategy});
      fabric.launch();
      torch::nn::Sequential layers;
      for (int i = 0; i < 6; ++i) layers->push_back(torch::nn::Linear(256, 256));  // 256 KiB of weights each
      auto [model, optimizer] = fabric.setup(layers, [](auto params) {
        return std::make_shared<torch::optim::SGD>(params, torch::optim::SGDOptions(0.01));
      });
      for (int step = 0; step < 2; ++step) {  // the second forward rebuilds the buckets in arrival order
        optimizer.zero_grad();
        fabric.backward(model(torch::randn({4, 256})).square().mean());
        optimizer.step();
      }
      std::cout << "buckets " << strategy->buckets(*model).size() << std::endl;
    } else if (scenario == "buffers") {
      auto strategy = std::make_shared<fabric::DDPStrategy>(
          fabric::DDPOptions{.broadcast_buffers = std::string(argv[2]) == "on"});
      fabric::Fabric fabric({.accelerator = "cpu", .strategy = strategy});
      fabric.launch();
      auto model = fabric.setup_module(std::make_shared<WithBuffer>());
      if (fabric.global_rank() == 1) model->marker.fill_(1.0);
      fabric.backward(model(torch::ones({2, 4})).sum());
      std::cout << "buffer " << model->marker.sum().item<double>() / 3 << std::endl;
    } else if (scenario == "static-unused") {
      auto strategy = std::make_shared<fabric::DDPStrategy>(fabric::DDPOptions{.static_graph = true});
      fabric::Fabric fabric({.accelerator = "cpu", .strategy = strategy});
      fabric.launch();
      auto model = fabric.setup_module(std::make_shared<PartlyUsed>());
      for (int step = 0; step < 3; ++step) {
        for (auto& param : model->parameters()) param.mutable_grad() = torch::Tensor();
        fabric.backward(model(torch::full({1, 4}, 1.0 + fabric.global_rank())).sum());
      }
      // Averaged across ranks: the inputs were 1 and 2, so d(sum)/d(bias) = 1 and d/d(weight) = 1.5.
      require(model->used->weight.grad().allclose(torch::full({2, 4}, 1.5)), "used weight's gradient is averaged");
      require(!model->unused->weight.grad().defined() || model->unused->weight.grad().abs().sum().item<double>() == 0,
              "the unused parameter got no gradient");
    } else if (scenario == "timeout") {
      const auto timeout = std::chrono::milliseconds(std::stoi(argv[2]));
      auto strategy = std::make_shared<fabric::DDPStrategy>(fabric::DDPOptions{.timeout = timeout});
      fabric::Fabric fabric({.accelerator = "cpu", .strategy = strategy});
      fabric.launch();
      if (fabric.global_rank() == 1) {
        std::this_thread::sleep_for(timeout * 4);  // never joins while rank 0 waits
        return 0;
      }
      try {
        fabric.all_reduce(torch::ones({1}));
      } catch (const fabric::CollectiveError& error) {
        std::cout << "COLLECTIVE_ERROR: " << error.what() << std::endl;
        return 6;
      }
    } else if (scenario == "flaky") {
      // flaky [after-standbys]: with after-standbys, rank 1 waits for the launcher's warm
      // standbys (one per rank) to be loaded before it kills itself.
      fabric::Fabric fabric({.accelerator = "cpu", .strategy = "ddp"});
      fabric.launch();
      fabric.barrier();
      std::cout << "generation " << generation() << " pid " << ::getpid() << " ppid " << ::getppid() << std::endl;
      if (generation() == 0 && fabric.global_rank() == 1) {
        if (argc > 2 && std::string(argv[2]) == "after-standbys" &&
            !fabric::testing::wait_for_warm_standbys(fabric.world_size(), std::chrono::seconds(60))) {
          return 5;
        }
        ::raise(SIGKILL);
      }
      fabric.barrier();
      std::cout << "generation " << generation() << " done" << std::endl;
    } else if (scenario == "misbehave") {
      fabric::Fabric fabric({.accelerator = "cpu", .strategy = "ddp"});
      fabric.launch();
      auto [model, optimizer] = fabric.setup(ddp_reference::build_model(), [](auto params) {
        return std::make_shared<torch::optim::SGD>(params, torch::optim::SGDOptions(0.1));
      });
      for (int step = 0; step < 40; ++step) {
        if (step == 5 && fabric.global_rank() == 1 && generation() == 0) misbehave(argv[2]);
        train_step(fabric, model, optimizer, step);
      }
      std::cout << "generation " << generation() << " done" << std::endl;
    } else if (scenario == "straggler") {
      // straggler RANK STEPS MS: RANK sleeps MS before each of STEPS steps, and the others
      // wait for it in backward; with RANK -1 every rank sleeps as long (nobody lags). Runs
      // on as many nodes as the launcher placed it on (GROUP_WORLD_SIZE).
      const int slow_rank = std::stoi(argv[2]), steps = std::stoi(argv[3]);
      const auto pause = std::chrono::milliseconds(std::stoi(argv[4]));
      const char* nodes = std::getenv("GROUP_WORLD_SIZE");
      fabric::Fabric fabric({.accelerator = "cpu", .strategy = "ddp", .num_nodes = nodes ? std::atoi(nodes) : 1});
      fabric.launch();
      auto [model, optimizer] = fabric.setup(ddp_reference::build_model(), [](auto params) {
        return std::make_shared<torch::optim::SGD>(params, torch::optim::SGDOptions(0.1));
      });
      for (int step = 0; step < steps; ++step) {
        if (slow_rank < 0 || fabric.global_rank() == slow_rank) std::this_thread::sleep_for(pause);
        train_step(fabric, model, optimizer, step);
      }
      std::cout << "done" << std::endl;
    } else if (scenario == "late-join") {
      const char* rank = std::getenv("RANK");
      if (rank != nullptr && std::string(rank) == "1") std::this_thread::sleep_for(std::chrono::seconds(60));
      fabric::Fabric fabric({.accelerator = "cpu", .strategy = "ddp"});
      fabric.launch();
    } else if (scenario == "launch-and-fail") {
      try {
        fabric::Fabric fabric({.accelerator = "cpu", .strategy = "ddp", .devices = 2});
        fabric.launch();
        if (fabric.global_rank() == 0) throw std::runtime_error("rank 0 fails");
        fabric.barrier();  // rank 1 waits here for a rank 0 that never comes
      } catch (const std::runtime_error& error) {  // ~Fabric ran while this was in flight
        std::cout << "FAILED: " << error.what() << std::endl;
        return 5;
      }
    } else if (scenario == "fabric-collectives") {
      fabric::Fabric fabric({.accelerator = "cpu", .strategy = "ddp"});
      fabric.launch();
      const int rank = fabric.global_rank(), world = fabric.world_size();
      require(fabric.broadcast(rank == 0 ? std::string("from rank zero") : std::string(), 0) == "from rank zero",
              "broadcast string");
      require(fabric.broadcast(rank == 1 ? 42 : 0, 1) == 42, "broadcast int from rank 1");
      require(fabric.broadcast(rank == 0 ? 2.5 : 0.0) == 2.5, "broadcast double");
      require(fabric.all_reduce(torch::tensor(double(rank))).item<double>() == (world - 1) / 2.0, "mean");
      require(fabric.all_reduce(torch::tensor(double(rank)), "max").item<double>() == world - 1, "max");
      auto gathered = fabric.all_gather(torch::arange(rank + 1));
      require(static_cast<int>(gathered.size()) == world && gathered.back().numel() == world, "all_gather");
      const std::string marker = std::string(argv[2]) + "/rank-zero-was-here";
      {
        auto first = fabric.rank_zero_first();
        if (rank == 0) std::ofstream(marker) << "done";
        require(std::ifstream(marker).good(), "rank zero ran the block before the others");
      }
    } else if (scenario == "unused" || scenario == "unused-allowed") {
      fabric::Fabric fabric({.accelerator = "cpu",
                             .strategy = scenario == "unused" ? "ddp" : "ddp_find_unused_parameters_true"});
      fabric.launch();
      auto model = fabric.setup_module(std::make_shared<PartlyUsed>());
      for (int step = 0; step < 2; ++step) fabric.backward(model(torch::ones({1, 4})).sum());
    }
  } catch (const fabric::UsageError& error) {
    std::cout << "USAGE_ERROR: " << error.what() << std::endl;
    return 4;
  }
  return 0;
}
