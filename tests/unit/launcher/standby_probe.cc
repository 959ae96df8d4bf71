// A program linked with the standby wait (fabric/worker/standby.h), as every libfabric
// program is, for standby_pool_test: main() prints one line saying what it found, then
// exits with EXIT_CODE (0 when unset), or with WAIT_FOR_SIGNAL set waits for a signal.
//   main pid=<pid> standby=<0|1> rank=<RANK or -> variables=<how many> standby_fd=<set|unset> ppid=<parent>
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
  if (std::getenv("WAIT_FOR_SIGNAL")) ::pause();
  const char* code = std::getenv("EXIT_CODE");
  return code ? std::atoi(code) : 0;
}
