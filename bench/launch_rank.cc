// One rank of bench/launch: connects to its peers as any Fabric program does (fabric.launch
// under fabricd or torchrun), passes the first barrier, and appends to the file OUT
//   barrier <generation> <system-clock ms>
// With "crash", rank 1 of generation 0 then appends "crash <ms>" and SIGKILLs itself while
// the others wait in a second barrier, so the launcher must restart the group; with
// "crash after-standbys" it first waits for fabricd's warm standbys to be loaded.
// With "hold" (bench/cluster), every rank of generation 0 then idles for up to 120 s, so that
// the job is still running when the bench takes a node away; later generations exit at once.
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <string>
#include <thread>

#include "fabric/fabric.h"
#include "support/warm_standbys.h"

namespace {

long long now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// One write(2) per line with O_APPEND: lines of concurrent ranks never mix.
void append(const std::string& path, const std::string& line) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT, 0644);
  const std::string text = line + "\n";
  if (fd < 0 || ::write(fd, text.data(), text.size()) != static_cast<ssize_t>(text.size())) std::exit(2);
  ::close(fd);
}

int generation() {
  for (const char* name : {"FABRICD_RESTART_COUNT", "TORCHELASTIC_RESTART_COUNT"}) {
    if (const char* value = std::getenv(name)) return std::atoi(value);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  const std::string out = argv[1];
  const std::string mode = argc > 2 ? argv[2] : "";
  const bool crash = mode == "crash", hold = mode == "hold";
  const bool after_standbys = argc > 3 && std::string(argv[3]) == "after-standbys";
  // The launcher's node count (fabricd and torchrun both set it), as examples/digits does.
  const char* nodes = std::getenv("GROUP_WORLD_SIZE");
  fabric::Fabric fabric({.accelerator = "cpu", .strategy = "ddp", .num_nodes = nodes && *nodes ? std::atoi(nodes) : 1});
  fabric.launch();
  fabric.barrier();
  append(out, "barrier " + std::to_string(generation()) + " " + std::to_string(now_ms()));
  if (crash && generation() == 0) {
    if (fabric.global_rank() == 1) {
      if (after_standbys && !fabric::testing::wait_for_warm_standbys(fabric.world_size(), std::chrono::seconds(120))) {
        return 5;
      }
      append(out, "crash " + std::to_string(now_ms()));
      ::raise(SIGKILL);
    }
    fabric.barrier();  // never passes: rank 1 is gone
  }
  if (hold && generation() == 0) std::this_thread::sleep_for(std::chrono::seconds(120));  // until stopped
  return 0;
}
