// FollowerService: what a coordinator that does not lead serves on the coordinator's port.
// Every call, of any service and method, is answered UNAVAILABLE with the leader's address
// in the message and in the trailing metadata `fabric-leader` (LeaderChannel reads it), so
// that agents and the CLI go to the leader by themselves; nothing is proxied.
#pragma once

#include <grpcpp/generic/async_generic_service.h>

#include <functional>
#include <string>

namespace fabric::launcher {

inline constexpr char kLeaderMetadataKey[] = "fabric-leader";

class FollowerService final : public grpc::CallbackGenericService {
 public:
  // `leader` returns the leader's address now, empty while none is known; `trouble` why
  // none may be known (etcd's last error to this process), empty when there is no reason.
  explicit FollowerService(std::function<std::string()> leader, std::function<std::string()> trouble = {})
      : leader_(std::move(leader)), trouble_(std::move(trouble)) {}

  grpc::ServerGenericBidiReactor* CreateReactor(grpc::GenericCallbackServerContext* context) override;

 private:
  std::function<std::string()> leader_, trouble_;
};

}  // namespace fabric::launcher
