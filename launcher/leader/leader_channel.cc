#include "leader/leader_channel.h"

#include <algorithm>

#include "leader/follower_service.h"

namespace fabric::launcher {

std::vector<std::string> split_addresses(const std::string& addresses) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start <= addresses.size()) {
    const std::size_t end = std::min(addresses.find(',', start), addresses.size());
    if (end > start) out.push_back(addresses.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

LeaderChannel::LeaderChannel(const std::string& addresses, Connect connect)
    : connect_(std::move(connect)), addresses_(split_addresses(addresses)) {
  if (addresses_.empty()) addresses_.push_back(addresses);  // let the channel say what is wrong with it
  current_ = addresses_.front();
}

std::shared_ptr<grpc::Channel> LeaderChannel::channel() {
  std::lock_guard lock(mutex_);
  auto& channel = channels_[current_];
  if (!channel) channel = connect_(current_);
  return channel;
}

std::string LeaderChannel::address() {
  std::lock_guard lock(mutex_);
  return current_;
}

bool LeaderChannel::follow(const grpc::Status& status, const grpc::ClientContext& context) {
  if (status.error_code() != grpc::StatusCode::UNAVAILABLE &&
      status.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED) {
    return false;
  }
  const auto& trailers = context.GetServerTrailingMetadata();
  if (const auto named = trailers.find(kLeaderMetadataKey); named != trailers.end()) {
    const std::string leader(named->second.data(), named->second.size());
    std::lock_guard lock(mutex_);
    if (leader == current_) return false;
    current_ = leader;
    return true;
  }
  std::lock_guard lock(mutex_);
  if (addresses_.size() < 2) return false;
  const auto at = std::find(addresses_.begin(), addresses_.end(), current_);
  current_ = (at == addresses_.end() || std::next(at) == addresses_.end()) ? addresses_.front() : *std::next(at);
  return true;
}

}  // namespace fabric::launcher
