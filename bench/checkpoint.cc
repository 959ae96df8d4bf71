// bench/checkpoint: save and load throughput of a ~512 MB state (8 float32 tensors of 64 MB)
// through fabric.save / fabric.load, beside (a) a plain copy of the same file's bytes — what
// the disk allows — and (b) Python's torch.save / torch.load(weights_only=True) of the same
// tensors. Both baselines write crash-safely as fabric.save does (temporary file, fsync,
// rename): on a VM disk fresh blocks cost several times more than overwriting in place. One JSON line per comparison; ratio = ours ÷ theirs in
// MB/s, higher is better. Loads read from the page cache on both sides.
//   bench/run checkpoint [--rounds 5] [--dir /tmp]
#include <fcntl.h>
#include <unistd.h>

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "common.h"
#include "fabric/fabric.h"

namespace {

constexpr int kTensors = 8;
constexpr std::int64_t kElements = 16 * 1024 * 1024;  // 64 MB of float32 each

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

template <typename Action>
double seconds(Action&& action) {
  const auto start = std::chrono::steady_clock::now();
  action();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// read() + write() of `from` into a temporary file, fsync, rename to `to`: the bytes moved
// crash-safely with no format at all, the disk's limit for what fabric.save does.
void copy_file(const std::string& from, const std::string& to) {
  const std::string temporary = to + ".tmp";
  const int in = ::open(from.c_str(), O_RDONLY);
  const int out = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  std::vector<char> buffer(8 << 20);
  for (ssize_t n; (n = ::read(in, buffer.data(), buffer.size())) > 0;) {
    if (::write(out, buffer.data(), static_cast<size_t>(n)) != n) std::perror("write");
  }
  ::fsync(out);
  ::close(in);
  ::close(out);
  ::rename(temporary.c_str(), to.c_str());
}

// The numbers of the JSON array named `key` in `json` (the reference script's output).
std::vector<double> json_numbers(const std::string& json, const std::string& key) {
  std::vector<double> values;
  auto start = json.find('[', json.find("\"" + key + "\""));
  auto end = json.find(']', start);
  for (char* p = const_cast<char*>(json.data()) + start + 1; p < json.data() + end;) {
    values.push_back(std::strtod(p, &p));
    while (p < json.data() + end && (*p == ',' || *p == ' ')) ++p;
  }
  return values;
}

void print(const char* name, double ours_mb_s, const char* baseline, double theirs_mb_s) {
  std::printf("{\"bench\": \"checkpoint\", \"case\": \"%s-512mb\", \"metric\": \"mb_per_s\", \"ours\": %.1f, "
              "\"baseline\": \"%s\", \"theirs\": %.1f, \"ratio\": %.3f, \"better\": \"higher\"}\n",
              name, ours_mb_s, baseline, theirs_mb_s, ours_mb_s / theirs_mb_s);
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  int rounds = 5;
  std::string dir = "/tmp";
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--rounds") == 0) rounds = std::stoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--dir") == 0) dir = argv[i + 1];
  }
  fabric::Fabric fabric({.accelerator = "cpu"});
  fabric::State state;
  for (int i = 0; i < kTensors; ++i) state["tensor_" + std::to_string(i)] = torch::full({kElements}, double(i));
  const std::string ours = dir + "/fabric-bench.pt", copy = dir + "/fabric-bench-copy.pt";

  // Each side runs a warm-up and then `rounds` repetitions in one process, and the median is
  // reported. (Interleaving sides round by round, as bench/step_overhead does, biases this
  // one: a fresh process's first 512 MB write is systematically faster than steady state on
  // a VM disk, and successive writers change each other's block allocation.)
  std::vector<double> save_s, load_s, copy_s, python_save_s, python_load_s;
  const double megabytes = kTensors * kElements * 4 / 1e6;
  for (int round = 0; round <= rounds; ++round) {
    const double save = seconds([&] { fabric.save(ours, state); });
    const double load = seconds([&] { fabric.load(ours); });
    if (round > 0) save_s.push_back(save), load_s.push_back(load);
  }
  for (int round = 0; round <= rounds; ++round) {
    const double copied = seconds([&] { copy_file(ours, copy); });
    if (round > 0) copy_s.push_back(copied);
  }
  const std::string python = bench::run_command(std::string(FABRIC_PYTHON) + " " + FABRIC_SOURCE_DIR +
                                        "/bench/checkpoint_reference.py " + dir + " " + std::to_string(kTensors) +
                                        " " + std::to_string(kElements) + " " + std::to_string(rounds + 1));
  python_save_s = json_numbers(python, "save_s");
  python_load_s = json_numbers(python, "load_s");
  python_save_s.erase(python_save_s.begin());  // the warm-up round
  python_load_s.erase(python_load_s.begin());
  print("save", megabytes / median(save_s), "file-copy-tmp-fsync-rename", megabytes / median(copy_s));
  print("save", megabytes / median(save_s), "python-torch.save-tmp-fsync-rename", megabytes / median(python_save_s));
  print("load", megabytes / median(load_s), "python-torch.load", megabytes / median(python_load_s));
  ::unlink(ours.c_str());
  ::unlink(copy.c_str());
  ::unlink((dir + "/python.pt").c_str());
  return 0;
}
