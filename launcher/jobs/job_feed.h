// JobFeed: the read side of JobService's streams — WatchJob and StreamLogs — over any
// holder of jobs that keeps, per job, every change as a JobEvent and the retained output
// lines in a LogBuffer, all under one mutex, and notifies one condition variable on every
// change. The coordinator and `fabricd run --serve` serve their streams through it, so the
// delivery rules of job.proto (every change its own event; logs complete once the job has
// ended) are written once.
#pragma once

#include <grpcpp/grpcpp.h>
#include <grpcpp/support/sync_stream.h>

#include <condition_variable>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "fabric/v1/job.pb.h"
#include "jobs/log_buffer.h"

namespace fabric::launcher {

class JobFeed {
 public:
  // One job as the streams read it; valid while the feed's mutex is held.
  struct View {
    const std::vector<fabric::v1::JobEvent>* events;  // never empty: the last is the job now
    const LogBuffer* logs;
    bool finished;  // terminal, and no rank of it is still running anywhere
  };

  virtual ~JobFeed() = default;
  virtual std::mutex& feed_mutex() = 0;
  virtual std::condition_variable& feed_changed() = 0;
  // With the mutex held: the server is going away (streams end with UNAVAILABLE).
  virtual bool feed_closed() const = 0;
  // With the mutex held: the job, or nullopt when there is none (never, or forgotten).
  virtual std::optional<View> view(const std::string& job_id) = 0;
};

grpc::Status watch_job(JobFeed& feed, grpc::ServerContext& context, const std::string& job_id,
                       grpc::ServerWriter<fabric::v1::JobEvent>& writer);
grpc::Status stream_logs(JobFeed& feed, grpc::ServerContext& context, const fabric::v1::StreamLogsRequest& request,
                         grpc::ServerWriter<fabric::v1::LogLine>& writer);

grpc::Status job_not_found(const std::string& job_id);

}  // namespace fabric::launcher
