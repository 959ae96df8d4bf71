// LauncherServices: what a launcher that supervises this process offers beyond its
// variables — its store (the process group rendezvous through it), barriers that name the
// ranks that are missing, and the progress reports its hang detection follows. A
// ClusterEnvironment hands it out (ClusterEnvironment::launcher()); only fabricd's has one
// (fabricd_environment.cc), so no other code asks which launcher it runs under.
//
// One per process, alive until exit (the terminate handler may use it at the very end).
#pragma once

#include <torch/csrc/distributed/c10d/Store.hpp>

#include <chrono>
#include <map>
#include <optional>
#include <string>

#include "fabric/environment.h"
#include "fabric/worker/progress_reporter.h"

namespace fabric {

class LauncherServices {
 public:
  virtual ~LauncherServices() = default;

  // A c10d store served by the launcher, for process groups.
  virtual c10::intrusive_ptr<c10d::Store> store(std::chrono::milliseconds timeout) = 0;
  // Blocks until every rank of the job reaches the n-th barrier called `name`; a
  // CollectiveError naming the missing ranks when it times out.
  virtual void barrier(const std::string& name, std::chrono::milliseconds timeout) = 0;
  // The training loop moved (a forward in `phase`, an optimizer step). Cheap: every step.
  virtual void progress(const char* phase) noexcept = 0;
  virtual void step() noexcept = 0;
  // The rank reached the step's gradient synchronization (backward()): straggler detection
  // compares when each rank gets there.
  virtual void synchronizing() noexcept = 0;
  // `count` samples went through a training forward, for the job's samples per second.
  virtual void samples(std::int64_t count) noexcept = 0;
  // The scalars the rank just logged (fabric.log): the launcher shows the latest of each.
  virtual void metrics(const std::map<std::string, double>& scalars) = 0;
  // While the returned guard lives the rank waits on its peers (backward, a collective,
  // checkpoint I/O): heartbeats go on, and the wait is not taken for a hang.
  virtual worker::ProgressReporter::Busy busy(const char* phase) = 0;
};

namespace environments {

// busy() when there is a launcher, nothing otherwise: `auto guard = busy(launcher, "x");`.
inline std::optional<worker::ProgressReporter::Busy> busy(LauncherServices* launcher, const char* phase) {
  if (launcher == nullptr) return std::nullopt;
  return launcher->busy(phase);
}

}  // namespace environments
}  // namespace fabric
