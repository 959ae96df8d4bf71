// bench/launch: how fast a launcher gets a job going, fabricd against torchrun (from the
// pinned torch wheel), both starting the same C++ rank program (launch_rank) in the same
// run, alternating round by round.
//   time_to_first_barrier  launcher started -> every one of N ranks past its first barrier
//   crash_to_barrier       a rank SIGKILLs itself -> the restarted group past its barrier
//   *_zygote               the same, fabricd with --warm-standby: every rank forked from one
//                          process that loaded the program once
//   crash_to_barrier_standby_pool  the restart, fabricd with --warm-standby and the zygote
//                          refused (FABRICD_NO_ZYGOTE=1): the restarted ranks are standbys
//                          (the crashing rank first waits for them to be loaded, as they are
//                          in a job that has run a while)
//   load_floor             N processes of the rank program loaded, waiting before main(): what
//                          no launch that starts N processes can beat on this machine
// Prints one JSON line per (case, N); ratio = fabricd / torchrun (lower is better), the median of
// the alternating rounds (--rounds, 3) with its min-max spread.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "common.h"
#include "ranks/rank_environment.h"
#include "ranks/standby_pool.h"

namespace {

long long now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

struct Events {
  std::vector<long long> barriers[2];  // by generation
  long long crash = -1;
};

Events read_events(const std::string& path) {
  Events events;
  std::ifstream file(path);
  for (std::string kind; file >> kind;) {
    if (kind == "barrier") {
      int generation = 0;
      long long at = 0;
      file >> generation >> at;
      if (generation >= 0 && generation < 2) events.barriers[generation].push_back(at);
    } else if (kind == "crash") {
      file >> events.crash;
    }
  }
  return events;
}

struct Launcher {
  std::string name;
  // The command that runs `nproc` ranks of `program args`, restarting once when restart.
  std::string (*command)(const std::string& program, int nproc, bool restart);
  // fabricd's standby pool: the crashing rank first waits for the standbys to be loaded.
  bool wait_for_standbys = false;
};

std::string fabricd_command(const std::string& program, int nproc, bool restart) {
  return std::string(FABRICD) + " run --nproc-per-node " + std::to_string(nproc) +
         (restart ? " --max-restarts 1" : "") + " --grace-period 1 " + program;
}

// Ranks forked from one zygote, at the start and at the restart.
std::string fabricd_zygote_command(const std::string& program, int nproc, bool restart) {
  return fabricd_command("", nproc, restart) + "--warm-standby " + program;
}

// No zygote (the program refuses it): restarts from a pool of standbys.
std::string fabricd_pool_command(const std::string& program, int nproc, bool restart) {
  return fabricd_command("", nproc, restart) + "--warm-standby --env FABRICD_NO_ZYGOTE=1 " + program;
}

std::string torchrun_command(const std::string& program, int nproc, bool restart) {
  return std::string(TORCHRUN) + " --standalone --nproc-per-node " + std::to_string(nproc) +
         (restart ? " --max-restarts 1" : "") + " --no-python " + program;
}

// One measurement in ms; -1 when the run did not produce what it should.
double measure(const Launcher& launcher, int nproc, bool crash, const std::string& out) {
  ::unlink(out.c_str());
  std::string program = std::string(LAUNCH_RANK) + " " + out;
  if (crash) program += launcher.wait_for_standbys ? " crash after-standbys" : " crash";
  const long long start = now_ms();
  bench::run_command(launcher.command(program, nproc, crash) + " > /dev/null 2>&1");
  const Events events = read_events(out);
  const auto& wanted = events.barriers[crash ? 1 : 0];
  if (static_cast<int>(wanted.size()) != nproc || (crash && events.crash < 0)) return -1;
  const long long last = *std::max_element(wanted.begin(), wanted.end());
  return static_cast<double>(last - (crash ? events.crash : start));
}

// The floor under any launch that starts N processes of the rank program: N of them started
// at once until each has loaded the program and its libraries and waits before main() (the
// standby wait, which is exactly that point), in ms. No rendezvous, no barrier.
double load_floor(int nproc) {
  fabric::launcher::Environment env = fabric::launcher::inherited_environment();
  fabric::launcher::add_thread_limit(env, nproc, fabric::launcher::available_cpus());  // as fabricd's ranks
  const auto start = std::chrono::steady_clock::now();
  fabric::launcher::StandbyPool pool({.program = LAUNCH_RANK, .env = env});
  pool.fill(static_cast<std::size_t>(nproc));
  while (pool.ready() < static_cast<std::size_t>(nproc)) ::usleep(1000);
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  int rounds = 3;
  std::vector<int> sizes = {2, 4, 8};
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--rounds") rounds = std::stoi(argv[i + 1]);
    if (flag == "--sizes") {
      sizes = bench::parse_int_list(argv[i + 1]);
    }
  }
  const Launcher cold{"fabricd", fabricd_command}, torchrun{"torchrun", torchrun_command};
  const Launcher zygote{"fabricd --warm-standby", fabricd_zygote_command};
  const Launcher pool{"fabricd --warm-standby, no zygote", fabricd_pool_command, /*wait_for_standbys=*/true};
  const std::string out = "/tmp/bench-launch-" + std::to_string(::getpid());
  // The first launch and a restart with every rank started anew, then forked from a zygote,
  // then (restarts) from a pool of standbys.
  struct Case {
    const char* name;
    bool crash;
    const Launcher& fabricd;
  };
  for (const Case& c : {Case{"time_to_first_barrier", false, cold}, Case{"time_to_first_barrier_zygote", false, zygote},
                        Case{"crash_to_barrier", true, cold}, Case{"crash_to_barrier_zygote", true, zygote},
                        Case{"crash_to_barrier_standby_pool", true, pool}}) {
    const bool crash = c.crash;
    const Launcher& fabricd = c.fabricd;
    for (const int nproc : sizes) {
      const auto timed = [&](const Launcher& launcher) {
        const double ms = measure(launcher, nproc, crash, out);
        if (ms < 0) {
          std::cerr << "launch: " << launcher.name << " with " << nproc << " ranks did not complete"
                    << (crash ? " the restart" : "") << std::endl;
          std::exit(1);
        }
        return ms;
      };
      const auto comparison = bench::alternate(rounds, [&] { return timed(fabricd); }, [&] { return timed(torchrun); });
      std::printf("{\"bench\": \"launch\", \"case\": \"%s-n%d\", %s}\n", c.name, nproc,
                  comparison.json("ms", "torchrun-standalone", "lower", "%.0f").c_str());
      std::fflush(stdout);
    }
  }
  // What the first barrier cannot beat: loading N processes on this machine, against
  // torchrun's first barrier in the same rounds.
  for (const int nproc : sizes) {
    const auto comparison = bench::alternate(rounds, [&] { return load_floor(nproc); }, [&] {
      const double ms = measure(torchrun, nproc, false, out);
      if (ms < 0) std::exit(1);
      return ms;
    });
    std::printf("{\"bench\": \"launch\", \"case\": \"load_floor-n%d\", %s}\n", nproc,
                comparison.json("ms", "torchrun-standalone first barrier", "lower", "%.0f").c_str());
    std::fflush(stdout);
  }
  ::unlink(out.c_str());
  return 0;
}
