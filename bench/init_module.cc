// bench/init_module: what init_module(empty_init=true) saves when a ~100M-parameter model
// is built only to be overwritten by a checkpoint. Both sides construct the same model
// (8 x Linear(3584, 3584), 102.8M float32 parameters) under fabric.init_module(), with and
// without empty_init, in alternating rounds; each round reports the construction time and
// the resident memory the new model added (pages its initialisation wrote). Then a load of
// the same state dict shows the model is usable either way.
//   bench/run init_module [--rounds 6]
#include <torch/torch.h>

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

#include "common.h"
#include "fabric/fabric.h"

namespace {

constexpr int kLayers = 8;
constexpr int kWidth = 3584;

torch::nn::Sequential make_model() {
  torch::nn::Sequential model;
  for (int i = 0; i < kLayers; ++i) model->push_back(torch::nn::Linear(kWidth, kWidth));
  return model;
}

double resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  long size = 0, resident = 0;
  statm >> size >> resident;
  return static_cast<double>(resident) * static_cast<double>(::sysconf(_SC_PAGESIZE));
}

struct Construction {
  double seconds = 0, resident = 0;
};

Construction construct(fabric::Fabric& fabric, bool empty_init) {
  const double before = resident_bytes();
  const auto start = std::chrono::steady_clock::now();
  torch::nn::Sequential model = nullptr;
  {
    auto scope = fabric.init_module(empty_init);
    model = make_model();
  }
  Construction result{std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(),
                      resident_bytes() - before};
  return result;  // the model is freed here, before the next round
}

}  // namespace

int main(int argc, char** argv) {
  int rounds = 6;
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], "--rounds") == 0) rounds = std::atoi(argv[i + 1]);
  }
  fabric::Fabric fabric({.accelerator = "cpu"});
  std::vector<double> empty_resident, full_resident;
  const auto seconds = bench::alternate(
      rounds,
      [&] {
        const auto c = construct(fabric, true);
        empty_resident.push_back(c.resident);
        return c.seconds;
      },
      [&] {
        const auto c = construct(fabric, false);
        full_resident.push_back(c.resident);
        return c.seconds;
      });
  const double parameters = kLayers * (static_cast<double>(kWidth) * kWidth + kWidth);
  std::printf("{\"bench\": \"init_module\", \"case\": \"%.1fM params, %d threads\", %s}\n", parameters / 1e6,
              at::get_num_threads(), seconds.json("construct_seconds", "init_module()", "lower", "%.4f").c_str());
  bench::Comparison resident{empty_resident, full_resident};
  std::printf("{\"bench\": \"init_module\", \"case\": \"%.1fM params\", %s}\n", parameters / 1e6,
              resident.json("resident_bytes_added", "init_module()", "lower", "%.0f").c_str());

  // Usable either way: an empty-init model takes a state dict like any other.
  torch::nn::Sequential source = make_model(), target = nullptr;
  {
    auto scope = fabric.init_module(true);
    target = make_model();
  }
  const auto start = std::chrono::steady_clock::now();
  {
    torch::NoGradGuard no_grad;
    auto from = source->parameters();
    auto to = target->parameters();
    for (std::size_t i = 0; i < to.size(); ++i) to[i].copy_(from[i]);
  }
  const double load = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const bool equal = target[0]->as<torch::nn::Linear>()->weight.equal(source[0]->as<torch::nn::Linear>()->weight);
  std::printf("{\"bench\": \"init_module\", \"case\": \"load after empty_init\", \"metric\": \"copy_seconds\", "
              "\"ours\": %.4f, \"loaded_equal\": %s}\n",
              load, equal ? "true" : "false");
  return equal ? 0 : 1;
}
