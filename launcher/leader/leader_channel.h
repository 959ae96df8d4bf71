// LeaderChannel: a client's coordinators ("a:7070,b:7070,c:7070", the members of one cluster
// of `fabricd serve --store etcd://…`) and the one it talks to now. After a call failed, it
// moves to the leader a follower named (follower_service.h), or to the next address when the
// coordinator it talked to is out of reach. With one address it always stays there.
#pragma once

#include <grpcpp/grpcpp.h>

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace fabric::launcher {

class LeaderChannel {
 public:
  using Connect = std::function<std::shared_ptr<grpc::Channel>(const std::string& address)>;
  // `addresses`: comma-separated host:port; `connect` makes the channel to one of them.
  LeaderChannel(const std::string& addresses, Connect connect);

  std::shared_ptr<grpc::Channel> channel();
  std::string address();
  // After a call failed with `status`: returns whether it moved to another coordinator, in
  // which case the call is worth making again at once.
  bool follow(const grpc::Status& status, const grpc::ClientContext& context);

 private:
  Connect connect_;
  std::vector<std::string> addresses_;
  std::mutex mutex_;
  std::string current_;
  std::map<std::string, std::shared_ptr<grpc::Channel>> channels_;  // made once per address
};

// Splits "a:1,b:2" into its addresses (empty ones dropped).
std::vector<std::string> split_addresses(const std::string& addresses);

}  // namespace fabric::launcher
