// A program linked with the standby wait (fabric/worker/standby.h), as every libfabric
// program is, for warm_standby_test: main() prints one line saying what it found, then
// exits with EXIT_CODE (0 when unset), or with WAIT_FOR_SIGNAL set waits for a signal.
//   main pid=<pid> standby=<0|1> rank=<RANK or -> variables=<how many> standby_fd=<set|unset> ppid=<parent>
// and a second line with what a rank's start must give it, whoever started it:
//   own_group=<1 when its process group is its own> blocked=<signals blocked, hex>
//   death_signal=<PR_GET_PDEATHSIG> name=<its process name>
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cstdlib>
#include <iostream>

#include "fabric/worker/standby.h"

extern char** environ;

int main() {
  int variables = 0;
  for (char** entry = environ; *entry != nullptr; ++entry) ++variables;
  const char* rank = std::getenv("RANK");
  std::cout << "main pid=" << ::getpid() << " standby=" << (fabric::worker::started_as_standby() ? 1 : 0)
            << " rank=" << (rank ? rank : "-") << " variables=" << variables
            << " standby_fd=" << (std::getenv(fabric::worker::kStandbyFdVariable) ? "set" : "unset")
            << " ppid=" << ::getppid() << std::endl;
  sigset_t blocked;
  sigemptyset(&blocked);
  ::sigprocmask(SIG_BLOCK, nullptr, &blocked);
  unsigned long mask = 0;
  for (int signal = 1; signal < 64; ++signal) mask |= sigismember(&blocked, signal) == 1 ? 1ul << (signal - 1) : 0;
  int death_signal = 0;
  ::prctl(PR_GET_PDEATHSIG, &death_signal);
  char name[16] = {};
  ::prctl(PR_GET_NAME, name);
  std::cout << "own_group=" << (::getpgrp() == ::getpid() ? 1 : 0) << " blocked=" << std::hex << mask << std::dec
            << " death_signal=" << death_signal << " name=" << name << std::endl;
  if (std::getenv("WAIT_FOR_SIGNAL")) ::pause();
  const char* code = std::getenv("EXIT_CODE");
  return code ? std::atoi(code) : 0;
}
