// EtcdClient: the calls of etcd's v3 gRPC API that fabricd needs (KV, Lease, Election), on
// a list of endpoints, the members of one etcd cluster.
//
// A call goes to the endpoint that answered last; when that one is out of reach it moves on
// to the next, so that losing one member of three is not seen. When no member can serve
// the call (no member reachable, or none with a raft leader: the cluster has lost its
// quorum) it throws JobStoreUnavailable saying which. etcd's own refusals (a bad request)
// throw JobStoreError. Thread-safe.
#pragma once

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "etcd/etcdserver/api/v3election/v3electionpb/v3election.grpc.pb.h"
#include "etcd/etcdserver/etcdserverpb/rpc.grpc.pb.h"
#include "jobs/job_store.h"

namespace fabric::launcher {

// `etcd://host:port[,host:port…][/prefix]`: the members, and the key prefix under which
// this cluster of fabricd keeps its keys (default /fabricd), so that one etcd may serve
// several.
struct EtcdAddress {
  std::vector<std::string> endpoints;
  std::string prefix = "/fabricd";
};
// Throws std::invalid_argument saying what is wrong with `url`.
EtcdAddress parse_etcd_url(const std::string& url);

// Ends a blocking call (a campaign) from another thread.
class Cancellation {
 public:
  void cancel();
  bool cancelled();

 private:
  friend class EtcdClient;
  // Registers the context of the attempt in flight; false when already cancelled.
  bool enter(grpc::ClientContext* context);
  void leave();

  std::mutex mutex_;
  grpc::ClientContext* context_ = nullptr;
  bool cancelled_ = false;
};

class EtcdClient {
 public:
  // `timeout`: how long one call may wait on one endpoint. Its callers hold locks across
  // calls (the coordinator's): after one call found no quorum, every call fails at once
  // until a probe of its own (on a thread of its own) finds the cluster whole again.
  explicit EtcdClient(std::vector<std::string> endpoints,
                      std::chrono::milliseconds timeout = std::chrono::milliseconds(1500));
  ~EtcdClient();
  EtcdClient(const EtcdClient&) = delete;
  EtcdClient& operator=(const EtcdClient&) = delete;

  etcdserverpb::RangeResponse range(const etcdserverpb::RangeRequest& request);
  etcdserverpb::TxnResponse txn(const etcdserverpb::TxnRequest& request);
  etcdserverpb::DeleteRangeResponse delete_range(const etcdserverpb::DeleteRangeRequest& request);
  etcdserverpb::LeaseGrantResponse lease_grant(std::int64_t ttl_seconds);
  void lease_revoke(std::int64_t lease);
  // One keep-alive of `lease`; returns its TTL left in seconds, 0 once etcd has let it expire.
  // `timeout` per member, shorter than the client's: a renewal is worth more tried again
  // soon than waited on (a member without a raft leader answers nothing until it has one).
  std::int64_t lease_keep_alive(std::int64_t lease, std::optional<std::chrono::milliseconds> timeout = std::nullopt);

  // Blocks until this campaigner leads `name`, trying the members in turn while they are
  // out of reach; std::nullopt once `cancellation` is cancelled.
  std::optional<v3electionpb::LeaderKey> campaign(const std::string& name, std::int64_t lease,
                                                  const std::string& value, Cancellation& cancellation);
  // The value the current leader of `name` proclaimed; empty while nobody leads.
  std::string leader(const std::string& name);
  void resign(const v3electionpb::LeaderKey& leader);

  // "a:2379,b:2379", for messages.
  std::string endpoints() const;

 private:
  struct Member {
    std::string endpoint;
    std::shared_ptr<grpc::Channel> channel;
    std::unique_ptr<etcdserverpb::KV::Stub> kv;
    std::unique_ptr<etcdserverpb::Lease::Stub> lease;
    std::unique_ptr<v3electionpb::Election::Stub> election;
  };
  // Runs `call(member, context, response)` on one member after another, from the last that
  // answered, until one answers.
  template <typename Response, typename Call>
  Response on_any_member(const char* what, Call&& call, std::optional<std::chrono::milliseconds> timeout = std::nullopt);

  // Until the cluster answers again: the error every call gets meanwhile. Probes it.
  void open_circuit(const std::string& why);
  void probe_until_whole();

  std::vector<Member> members_;
  std::chrono::milliseconds timeout_;
  std::mutex mutex_;
  std::condition_variable stopping_changed_;
  std::size_t current_ = 0;
  std::string broken_;  // why calls fail at once now; empty while the cluster answers
  bool stopping_ = false;
  std::thread prober_;
};

}  // namespace fabric::launcher
