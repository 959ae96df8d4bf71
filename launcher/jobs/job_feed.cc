#include "jobs/job_feed.h"

#include <google/protobuf/util/time_util.h>

#include "jobs/job_state.h"

namespace fabric::launcher {

namespace v1 = fabric::v1;
using std::chrono::milliseconds;

namespace {

// How long a stream sleeps between looks at its client's cancellation.
constexpr milliseconds kStreamPoll{500};

grpc::Status closed() { return {grpc::StatusCode::UNAVAILABLE, "the server is shutting down; call again"}; }

}  // namespace

grpc::Status job_not_found(const std::string& job_id) {
  return {grpc::StatusCode::NOT_FOUND, "no job '" + job_id + "' (never submitted, or already forgotten: see fabricd list)"};
}

grpc::Status watch_job(JobFeed& feed, grpc::ServerContext& context, const std::string& job_id,
                       grpc::ServerWriter<v1::JobEvent>& writer) {
  std::unique_lock lock(feed.feed_mutex());
  auto view = feed.view(job_id);
  if (!view) return job_not_found(job_id);
  // The snapshot first, then every event after it, each delivered on its own.
  v1::JobEvent snapshot;
  *snapshot.mutable_job() = view->events->back().job();
  *snapshot.mutable_time() = google::protobuf::util::TimeUtil::GetCurrentTime();
  std::size_t next = view->events->size();
  bool ended = is_terminal(snapshot.job().state());
  lock.unlock();
  if (!writer.Write(snapshot)) return grpc::Status::CANCELLED;
  lock.lock();
  while (!ended) {
    feed.feed_changed().wait_for(lock, kStreamPoll, [&] {
      view = feed.view(job_id);
      return feed.feed_closed() || !view || next < view->events->size();
    });
    if (context.IsCancelled()) return grpc::Status::CANCELLED;
    if (!view) return job_not_found(job_id);
    // A server going away still delivers the changes it has (a `fabricd run --serve`
    // closes right after its job's last one).
    if (next == view->events->size() && feed.feed_closed()) return closed();
    while (next < view->events->size() && !ended) {
      const v1::JobEvent event = (*view->events)[next++];
      ended = is_terminal(event.job().state());
      lock.unlock();
      if (!writer.Write(event)) return grpc::Status::CANCELLED;
      lock.lock();
      view = feed.view(job_id);
      if (!view) return ended ? grpc::Status::OK : job_not_found(job_id);
    }
  }
  return grpc::Status::OK;
}

grpc::Status stream_logs(JobFeed& feed, grpc::ServerContext& context, const v1::StreamLogsRequest& request,
                         grpc::ServerWriter<v1::LogLine>& writer) {
  if (request.tail_lines() < -1) {
    return {grpc::StatusCode::INVALID_ARGUMENT, "tail_lines is " + std::to_string(request.tail_lines()) +
                                                    "; use -1 for every retained line, 0 for none, or a count"};
  }
  const LogFilter filter{.ranks = {request.ranks().begin(), request.ranks().end()}, .stream = request.stream()};
  std::unique_lock lock(feed.feed_mutex());
  auto view = feed.view(request.job_id());
  if (!view) return job_not_found(request.job_id());
  auto lines = view->logs->tail(filter, request.tail_lines());
  std::uint64_t cursor = view->logs->last_sequence();
  for (;;) {
    const bool finished = view->finished;
    lock.unlock();
    for (const auto& [sequence, line] : lines) {
      if (!writer.Write(line)) return grpc::Status::CANCELLED;
    }
    // Lines an agent pushes after the last exit report are still on their way; a finished
    // job is closed once a look finds nothing new.
    if (!request.follow() || (finished && lines.empty())) return grpc::Status::OK;
    lock.lock();
    feed.feed_changed().wait_for(lock, kStreamPoll);
    if (context.IsCancelled()) return grpc::Status::CANCELLED;
    view = feed.view(request.job_id());
    if (!view) return grpc::Status::OK;  // forgotten: nothing more will come
    lines = view->logs->since(filter, cursor);
    cursor = view->logs->last_sequence();
    if (lines.empty() && feed.feed_closed()) return view->finished ? grpc::Status::OK : closed();
  }
}

}  // namespace fabric::launcher
