#include "fabric/worker/grpc_store.h"

#include <c10/util/Exception.h>

namespace fabric::worker {
namespace {

std::string to_string(const std::vector<std::uint8_t>& bytes) { return {bytes.begin(), bytes.end()}; }
std::vector<std::uint8_t> to_bytes(const std::string& text) { return {text.begin(), text.end()}; }

// c10d tells a store timeout from other failures by type: DistStoreError for "the keys did
// not come" (its callers add the rank and the operation), DistNetworkError for a lost
// launcher, DistError for the rest (a stale or aborted generation among them).
template <typename Fn>
auto translated(Fn&& fn) {
  try {
    return fn();
  } catch (const RendezvousError& error) {
    switch (error.kind()) {
      case RendezvousErrorKind::kTimeout: C10_THROW_ERROR(DistStoreError, error.what());
      case RendezvousErrorKind::kUnavailable: C10_THROW_ERROR(DistNetworkError, error.what());
      default: C10_THROW_ERROR(DistError, error.what());
    }
  }
}

}  // namespace

GrpcStore::GrpcStore(std::shared_ptr<RendezvousClient> client, std::chrono::milliseconds timeout)
    : Store(timeout), client_(std::move(client)) {}

c10::intrusive_ptr<c10d::Store> GrpcStore::clone() { return c10::make_intrusive<GrpcStore>(client_, timeout_); }

void GrpcStore::set(const std::string& key, const std::vector<std::uint8_t>& value) {
  translated([&] { client_->set(key, to_string(value)); });
}

std::vector<std::uint8_t> GrpcStore::compareSet(const std::string& key, const std::vector<std::uint8_t>& expected,
                                                const std::vector<std::uint8_t>& desired) {
  return translated([&] { return to_bytes(client_->compare_set(key, to_string(expected), to_string(desired))); });
}

std::vector<std::uint8_t> GrpcStore::get(const std::string& key) {
  return translated([&] { return to_bytes(client_->get(key, timeout_)); });
}

std::int64_t GrpcStore::add(const std::string& key, std::int64_t value) {
  return translated([&] { return client_->add(key, value); });
}

bool GrpcStore::deleteKey(const std::string& key) {
  return translated([&] { return client_->delete_key(key); });
}

bool GrpcStore::check(const std::vector<std::string>& keys) {
  return translated([&] { return client_->check(keys); });
}

std::int64_t GrpcStore::getNumKeys() {
  return translated([&] { return client_->num_keys(); });
}

void GrpcStore::wait(const std::vector<std::string>& keys) { wait(keys, timeout_); }

void GrpcStore::wait(const std::vector<std::string>& keys, const std::chrono::milliseconds& timeout) {
  translated([&] { client_->wait(keys, timeout); });
}

}  // namespace fabric::worker
