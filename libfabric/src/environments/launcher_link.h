// LauncherLink: fabricd's LauncherServices, the connection of a rank to the fabricd that
// started it (FABRICD_ENDPOINT is set): the rendezvous store, named barriers, heartbeats
// and the report of an uncaught exception all go through it. One per process, made on
// first use (by fabricd_environment.cc) and never torn down: the heartbeat thread and the
// terminate handler may need it until the very end.
#pragma once

#include <torch/csrc/distributed/c10d/Store.hpp>

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "environments/launcher_services.h"
#include "fabric/worker/progress_reporter.h"
#include "fabric/worker/rendezvous_client.h"

namespace fabric::environments {

class LauncherLink final : public LauncherServices {
 public:
  // This process's link, or nullptr when fabricd did not start it. ConfigurationError when
  // FABRICD_ENDPOINT is set but the rest of fabricd's variables are not.
  static LauncherLink* get();

  // A c10d store over the launcher's RendezvousService, for process groups.
  c10::intrusive_ptr<c10d::Store> store(std::chrono::milliseconds timeout) override;
  // The launcher's Barrier RPC; it names the missing ranks when it times out.
  void barrier(const std::string& name, std::chrono::milliseconds timeout) override;
  void progress(const char* phase) noexcept override { progress_.progress(phase); }
  void step() noexcept override { progress_.step(); }
  void synchronizing() noexcept override { progress_.synchronizing(); }
  void samples(std::int64_t count) noexcept override { progress_.samples(count); }
  void metrics(const std::map<std::string, double>& scalars) override { progress_.metrics(scalars); }
  worker::ProgressReporter::Busy busy(const char* phase) override { return progress_.busy(phase); }

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
