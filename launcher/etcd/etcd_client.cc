#include "etcd/etcd_client.h"

#include <grpcpp/grpcpp.h>

#include <iostream>
#include <stdexcept>
#include <thread>

namespace fabric::launcher {

namespace {

// etcd answers these while it has no raft leader, i.e. no quorum (etcdserver/api/v3rpc/
// rpctypes/error.go): the cluster cannot commit anything until a majority is back.
bool says_no_quorum(const grpc::Status& status) {
  const std::string& message = status.error_message();
  return message.find("etcdserver: no leader") != std::string::npos ||
         message.find("etcdserver: request timed out") != std::string::npos ||
         message.find("etcdserver: leader changed") != std::string::npos;
}

// Worth trying on another member: this one is out of reach, or cannot serve without a leader.
bool retryable(const grpc::Status& status) {
  return status.error_code() == grpc::StatusCode::UNAVAILABLE ||
         status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED || says_no_quorum(status);
}

std::vector<std::string> split(const std::string& text, char separator) {
  std::vector<std::string> parts;
  std::size_t start = 0;
  for (;;) {
    const std::size_t end = text.find(separator, start);
    parts.push_back(text.substr(start, end - start));
    if (end == std::string::npos) return parts;
    start = end + 1;
  }
}

}  // namespace

EtcdAddress parse_etcd_url(const std::string& url) {
  const std::string scheme = "etcd://";
  if (url.rfind(scheme, 0) != 0) {
    throw std::invalid_argument("'" + url + "' is not an etcd URL; write etcd://host:port[,host:port...][/prefix]");
  }
  std::string rest = url.substr(scheme.size());
  EtcdAddress address;
  if (const auto slash = rest.find('/'); slash != std::string::npos) {
    address.prefix = rest.substr(slash);
    rest.resize(slash);
    while (address.prefix.size() > 1 && address.prefix.back() == '/') address.prefix.pop_back();
    if (address.prefix == "/") {
      throw std::invalid_argument("'" + url + "': the key prefix is empty; leave it out for /fabricd");
    }
  }
  for (const std::string& endpoint : split(rest, ',')) {
    const auto colon = endpoint.rfind(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == endpoint.size() ||
        endpoint.find_first_not_of("0123456789", colon + 1) != std::string::npos) {
      throw std::invalid_argument("'" + url + "': endpoint '" + endpoint +
                                  "' is not host:port (etcd's client port, usually 2379)");
    }
    address.endpoints.push_back(endpoint);
  }
  return address;
}

void Cancellation::cancel() {
  std::lock_guard lock(mutex_);
  cancelled_ = true;
  if (context_) context_->TryCancel();
}

bool Cancellation::cancelled() {
  std::lock_guard lock(mutex_);
  return cancelled_;
}

bool Cancellation::enter(grpc::ClientContext* context) {
  std::lock_guard lock(mutex_);
  context_ = context;
  return !cancelled_;
}

void Cancellation::leave() {
  std::lock_guard lock(mutex_);
  context_ = nullptr;
}

EtcdClient::EtcdClient(std::vector<std::string> endpoints, std::chrono::milliseconds timeout) : timeout_(timeout) {
  if (endpoints.empty()) throw std::invalid_argument("an etcd client needs at least one endpoint");
  grpc::ChannelArguments arguments;
  arguments.SetMaxReceiveMessageSize(-1);  // a Range over every job of a long history
  // Find a member that came back soon, not after gRPC's default backoff of up to two minutes,
  // and give up on a connection attempt after a second, not gRPC's default of 20 s: SYNs sent
  // while the path was cut are retransmitted with exponential backoff, seconds after it heals.
  arguments.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  arguments.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 1000);
  // A connection whose path was cut (packets dropped, no reset) is closed once what it sent
  // stays unacknowledged for 2 s: gRPC sets TCP_USER_TIMEOUT to the keepalive timeout once
  // keepalive is on. Without it, calls queue on the dead connection until TCP's own
  // retransmission gets through, which after a cut of ten seconds can be seconds after the
  // cut healed (seen in CI: a coordinator that stayed leaderless after its path to etcd came
  // back). Pings every 10 s during calls: etcd refuses clients that ping more often than its
  // --grpc-keepalive-min-time (5 s by default).
  arguments.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 10'000);
  arguments.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 2'000);
  for (std::string& endpoint : endpoints) {
    Member member{.endpoint = std::move(endpoint)};
    member.channel = grpc::CreateCustomChannel(member.endpoint, grpc::InsecureChannelCredentials(), arguments);
    member.kv = etcdserverpb::KV::NewStub(member.channel);
    member.lease = etcdserverpb::Lease::NewStub(member.channel);
    member.election = v3electionpb::Election::NewStub(member.channel);
    members_.push_back(std::move(member));
  }
}

std::string EtcdClient::endpoints() const {
  std::string joined;
  for (const Member& member : members_) joined += (joined.empty() ? "" : ",") + member.endpoint;
  return joined;
}

EtcdClient::~EtcdClient() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  stopping_changed_.notify_all();
  if (prober_.joinable()) prober_.join();
}

void EtcdClient::open_circuit(const std::string& why) {
  std::lock_guard lock(mutex_);
  if (!broken_.empty() || stopping_) return;
  broken_ = why;
  if (prober_.joinable()) prober_.join();  // the last probe ended: it closed the circuit
  prober_ = std::thread([this] { probe_until_whole(); });
}

// A linearizable read needs a quorum, as a write does: once one answers, writes can commit.
void EtcdClient::probe_until_whole() {
  etcdserverpb::RangeRequest probe;
  probe.set_key("/");
  probe.set_count_only(true);
  std::unique_lock lock(mutex_);
  while (!stopping_changed_.wait_for(lock, std::chrono::milliseconds(250), [&] { return stopping_; })) {
    lock.unlock();
    bool answered = false;
    for (Member& member : members_) {
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() + timeout_);
      etcdserverpb::RangeResponse response;
      if (member.kv->Range(&context, probe, &response).ok()) {
        answered = true;
        break;
      }
    }
    lock.lock();
    if (answered) {
      broken_.clear();
      std::cerr << "fabricd: the etcd cluster " << endpoints() << " answers again" << std::endl;
      return;
    }
  }
}

template <typename Response, typename Call>
Response EtcdClient::on_any_member(const char* what, Call&& call, std::optional<std::chrono::milliseconds> timeout) {
  std::size_t first;
  {
    std::lock_guard lock(mutex_);
    if (!broken_.empty()) throw JobStoreUnavailable(broken_);
    first = current_;
  }
  grpc::Status last, reachable;  // the last answer, and the last from a member that is up
  for (std::size_t attempt = 0; attempt < members_.size(); ++attempt) {
    const std::size_t index = (first + attempt) % members_.size();
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + timeout.value_or(timeout_));
    Response response;
    last = call(members_[index], context, response);
    if (last.ok()) {
      std::lock_guard lock(mutex_);
      current_ = index;
      return response;
    }
    if (!retryable(last)) {
      throw JobStoreError(std::string("etcd refused ") + what + ": " + last.error_message());
    }
    // A member that says it has no leader has no quorum behind it; one that cannot answer
    // in time most likely neither, unless the path to it is cut (a member that is down
    // fails at once: connection refused).
    if (says_no_quorum(last) || last.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) reachable = last;
  }
  const std::string why =
      reachable.ok() ? "no member of the etcd cluster " + endpoints() + " answers (" + last.error_message() + ")"
      : says_no_quorum(reachable)
          ? "the etcd cluster " + endpoints() + " has no quorum (" + reachable.error_message() +
                "): the job store refuses writes until a majority of its members is back"
          : "the etcd cluster " + endpoints() + " does not answer in time: it has no quorum, or this machine is cut " +
                "off from it (" + reachable.error_message() + "); the job store refuses writes until it answers";
  open_circuit(why);
  throw JobStoreUnavailable(why + "; " + what + " was not made");
}

etcdserverpb::RangeResponse EtcdClient::range(const etcdserverpb::RangeRequest& request) {
  return on_any_member<etcdserverpb::RangeResponse>("a range read", [&](Member& m, auto& context, auto& response) {
    return m.kv->Range(&context, request, &response);
  });
}

etcdserverpb::TxnResponse EtcdClient::txn(const etcdserverpb::TxnRequest& request) {
  return on_any_member<etcdserverpb::TxnResponse>("a transaction", [&](Member& m, auto& context, auto& response) {
    return m.kv->Txn(&context, request, &response);
  });
}

etcdserverpb::DeleteRangeResponse EtcdClient::delete_range(const etcdserverpb::DeleteRangeRequest& request) {
  return on_any_member<etcdserverpb::DeleteRangeResponse>("a delete", [&](Member& m, auto& context, auto& response) {
    return m.kv->DeleteRange(&context, request, &response);
  });
}

etcdserverpb::LeaseGrantResponse EtcdClient::lease_grant(std::int64_t ttl_seconds) {
  etcdserverpb::LeaseGrantRequest request;
  request.set_ttl(ttl_seconds);
  return on_any_member<etcdserverpb::LeaseGrantResponse>("a lease grant", [&](Member& m, auto& context, auto& response) {
    return m.lease->LeaseGrant(&context, request, &response);
  });
}

void EtcdClient::lease_revoke(std::int64_t lease) {
  etcdserverpb::LeaseRevokeRequest request;
  request.set_id(lease);
  on_any_member<etcdserverpb::LeaseRevokeResponse>("a lease revoke", [&](Member& m, auto& context, auto& response) {
    return m.lease->LeaseRevoke(&context, request, &response);
  });
}

std::int64_t EtcdClient::lease_keep_alive(std::int64_t lease, std::optional<std::chrono::milliseconds> timeout) {
  etcdserverpb::LeaseKeepAliveRequest request;
  request.set_id(lease);
  const auto response = on_any_member<etcdserverpb::LeaseKeepAliveResponse>(
      "a lease keep-alive", [&](Member& m, grpc::ClientContext& context, etcdserverpb::LeaseKeepAliveResponse& out) {
        auto stream = m.lease->LeaseKeepAlive(&context);
        if (stream->Write(request) && stream->Read(&out)) {
          stream->WritesDone();
          context.TryCancel();  // one renewal is all we wanted of this stream
          stream->Finish();
          return grpc::Status::OK;
        }
        return stream->Finish();
      },
      timeout);
  return response.ttl();
}

std::optional<v3electionpb::LeaderKey> EtcdClient::campaign(const std::string& name, std::int64_t lease,
                                                            const std::string& value, Cancellation& cancellation) {
  v3electionpb::CampaignRequest request;
  request.set_name(name);
  request.set_lease(lease);
  request.set_value(value);
  for (std::size_t attempt = 0;; ++attempt) {
    Member& member = members_[attempt % members_.size()];
    grpc::ClientContext context;  // no deadline: a follower waits as long as the leader leads
    if (!cancellation.enter(&context)) return std::nullopt;
    v3electionpb::CampaignResponse response;
    const grpc::Status status = member.election->Campaign(&context, request, &response);
    cancellation.leave();
    if (status.ok()) return response.leader();
    if (cancellation.cancelled()) return std::nullopt;
    if (!retryable(status)) throw JobStoreError("etcd refused the campaign for " + name + ": " + status.error_message());
    // Campaigning again with the same lease is the same campaign (its key is name/lease).
    if (attempt % members_.size() == members_.size() - 1) std::this_thread::sleep_for(timeout_ / 10);
  }
}

std::string EtcdClient::leader(const std::string& name) {
  v3electionpb::LeaderRequest request;
  request.set_name(name);
  try {
    return on_any_member<v3electionpb::LeaderResponse>("a leader query", [&](Member& m, auto& context, auto& response) {
             return m.election->Leader(&context, request, &response);
           })
        .kv()
        .value();
  } catch (const JobStoreError& error) {
    // etcd answers "election: no leader" (FAILED_PRECONDITION) while nobody leads.
    if (std::string(error.what()).find("election: no leader") != std::string::npos) return "";
    throw;
  }
}

void EtcdClient::resign(const v3electionpb::LeaderKey& leader) {
  v3electionpb::ResignRequest request;
  *request.mutable_leader() = leader;
  on_any_member<v3electionpb::ResignResponse>("a resignation", [&](Member& m, auto& context, auto& response) {
    return m.election->Resign(&context, request, &response);
  });
}

}  // namespace fabric::launcher
