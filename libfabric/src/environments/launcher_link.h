// The connection of a rank to the fabricd that started it (FABRICD_ENDPOINT is set): the
// rendezvous store, named barriers, heartbeats and the report of an uncaught exception all
// go through it. One per process, made on first use and never torn down (the heartbeat
// thread and the terminate handler may need it until the very end).
#pragma once

#include <torch/csrc/distributed/c10d/Store.hpp>

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "fabric/worker/progress_reporter.h"
#include "fabric/worker/rendezvous_client.h"

namespace fabric::environments {

class LauncherLink {
 public:
  // This process's link, or nullptr when fabricd did not start it. ConfigurationError when
  // FABRICD_ENDPOINT is set but the rest of fabricd's variables are not.
  static LauncherLink* get();
  // The link if get() made one already, else nullptr; never throws, for the hot path.
  static LauncherLink* if_linked() noexcept { return instance_.load(std::memory_order_acquire); }
  // Keeps heartbeats going while a phase that waits on others runs (no-op without a link).
  static std::optional<worker::ProgressReporter::Busy> busy_if_linked(const char* phase) {
    if (auto* link = if_linked()) return link->progress_.busy(phase);
    return std::nullopt;
  }

  // A c10d store over the launcher's RendezvousService, for process groups.
  c10::intrusive_ptr<c10d::Store> store(std::chrono::milliseconds timeout);
  // Blocks until every rank of the job reaches the n-th barrier called `name`; the
  // launcher names the missing ranks when it times out (a CollectiveError here).
  void barrier(const std::string& name, std::chrono::milliseconds timeout);
  worker::ProgressReporter& progress() { return progress_; }

 private:
  explicit LauncherLink(worker::RankIdentity identity);

  static std::atomic<LauncherLink*> instance_;

  // Heartbeats and error reports go to the launcher that supervises this rank; the store
  // and barriers to the one that holds the job's store (the same one on a single node).
  std::shared_ptr<worker::RendezvousClient> client_;
  std::shared_ptr<worker::RendezvousClient> store_client_;
  worker::ProgressReporter progress_;
  std::mutex mutex_;
  std::map<std::string, std::int64_t> barrier_sequences_;  // guarded by mutex_
};

}  // namespace fabric::environments
