#include "environments/launcher_link.h"

#include <cstdlib>

#include "fabric/errors.h"
#include "fabric/worker/error_reporter.h"
#include "fabric/worker/grpc_store.h"

namespace fabric::environments {

std::atomic<LauncherLink*> LauncherLink::instance_{nullptr};

LauncherLink* LauncherLink::get() {
  static LauncherLink* link = []() -> LauncherLink* {
    std::optional<worker::RankIdentity> identity;
    try {
      identity = worker::identity_from_environment();
    } catch (const std::invalid_argument& error) {
      throw ConfigurationError(error.what());
    }
    if (!identity) return nullptr;
    auto* made = new LauncherLink(std::move(*identity));  // lives until exit, see the header
    instance_.store(made, std::memory_order_release);
    return made;
  }();
  return link;
}

namespace {

std::shared_ptr<worker::RendezvousClient> store_client(const std::shared_ptr<worker::RendezvousClient>& local) {
  const worker::RankIdentity& identity = local->identity();
  if (identity.store_endpoint.empty() || identity.store_endpoint == identity.endpoint) return local;
  worker::RankIdentity store = identity;
  store.endpoint = identity.store_endpoint;
  return std::make_shared<worker::RendezvousClient>(std::move(store));
}

}  // namespace

LauncherLink::LauncherLink(worker::RankIdentity identity)
    : client_(std::make_shared<worker::RendezvousClient>(std::move(identity))),
      store_client_(store_client(client_)),
      progress_(client_) {
  worker::report_uncaught_exceptions(client_, [this] { return progress_.steps(); });
  // The link is never destroyed, but its heartbeat thread must not run on into exit()'s
  // teardown of the C++ runtime: stop it first.
  std::atexit([] {
    if (auto* link = instance_.load(std::memory_order_acquire)) link->progress_.stop();
  });
}

c10::intrusive_ptr<c10d::Store> LauncherLink::store(std::chrono::milliseconds timeout) {
  return c10::make_intrusive<worker::GrpcStore>(store_client_, timeout);
}

void LauncherLink::barrier(const std::string& name, std::chrono::milliseconds timeout) {
  std::int64_t sequence = 0;
  {
    std::lock_guard lock(mutex_);
    sequence = barrier_sequences_[name]++;
  }
  auto busy = progress_.busy("barrier");
  try {
    store_client_->barrier(name.empty() ? "barrier" : name, sequence, 0, timeout);
  } catch (const worker::RendezvousError& error) {
    throw CollectiveError(std::string("barrier '") + name + "' failed on rank " +
                          std::to_string(client_->identity().rank) + ": " + error.what());
  }
}

}  // namespace fabric::environments
