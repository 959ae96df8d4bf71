// For a rank that is about to fail on purpose (a test's, a benchmark's): waits until its
// launcher's warm standbys (fabric/worker/standby.h) are loaded and waiting, so that the
// restart it causes is measured or checked from warm standbys, not from ones still loading.
// What it waits on is what anyone may read of them: the launcher's children (the launcher
// is this rank's parent: a rank it started, not one forked from a zygote) whose process name
// is "fabricd-standby", which a standby has only while it waits.
#pragma once

#include <dirent.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

namespace fabric::testing {

namespace standby_detail {

inline std::string read_all(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  std::ostringstream text;
  text << file.rdbuf();
  return text.str();
}

// The parent of `pid`, from /proc/PID/stat (after the command's closing parenthesis).
inline pid_t parent_of(const std::string& pid) {
  const std::string stat = read_all("/proc/" + pid + "/stat");
  const auto close = stat.rfind(')');
  if (close == std::string::npos) return -1;
  std::istringstream rest(stat.substr(close + 1));
  std::string state;
  pid_t parent = -1;
  rest >> state >> parent;
  return parent;
}

// POSIX, not std::filesystem: the programs that include this may link LibTorch, which
// carries std::filesystem symbols of its own.
inline int waiting_standbys_of(pid_t launcher) {
  int waiting = 0;
  DIR* proc = ::opendir("/proc");
  if (proc == nullptr) return 0;
  while (const dirent* entry = ::readdir(proc)) {
    const std::string pid = entry->d_name;
    if (pid.find_first_not_of("0123456789") != std::string::npos || parent_of(pid) != launcher) continue;
    if (read_all("/proc/" + pid + "/comm") == "fabricd-standby\n") ++waiting;
  }
  ::closedir(proc);
  return waiting;
}

}  // namespace standby_detail

// True once `count` standbys of this process's launcher wait; false after `patience`.
inline bool wait_for_warm_standbys(int count, std::chrono::milliseconds patience) {
  const pid_t launcher = ::getppid();
  const auto deadline = std::chrono::steady_clock::now() + patience;
  while (standby_detail::waiting_standbys_of(launcher) < count) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));  // polling /proc: nothing to block on
  }
  return true;
}

}  // namespace fabric::testing
