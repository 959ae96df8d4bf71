#include "leader/follower_service.h"

namespace fabric::launcher {

namespace {

// Answers at once and deletes itself when gRPC is done with it.
class Refusal final : public grpc::ServerGenericBidiReactor {
 public:
  explicit Refusal(grpc::Status status) { Finish(std::move(status)); }
  void OnDone() override { delete this; }
};

}  // namespace

grpc::ServerGenericBidiReactor* FollowerService::CreateReactor(grpc::GenericCallbackServerContext* context) {
  const std::string leader = leader_();
  if (leader.empty()) {
    const std::string trouble = trouble_ ? trouble_() : "";
    return new Refusal({grpc::StatusCode::UNAVAILABLE,
                        "this coordinator does not lead and knows of no leader: " +
                            (trouble.empty() ? std::string("none is elected yet (a leader died less than a lease "
                                                           "TTL ago, or one is being elected)")
                                             : "its store is out of reach: " + trouble) +
                            "; retry in a moment"});
  }
  context->AddTrailingMetadata(kLeaderMetadataKey, leader);
  return new Refusal({grpc::StatusCode::UNAVAILABLE,
                      "this coordinator does not lead; the leader is at " + leader + " (call " + context->method() +
                          " there)"});
}

}  // namespace fabric::launcher
