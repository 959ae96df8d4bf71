// LocalJobService: JobService for the one job of a `fabricd run --serve ADDR`, so that a
// script watches, reads the logs of and cancels a local job exactly as it would a job on a
// cluster. Fed by the LocalJob's hooks (local_job.h); WatchJob and StreamLogs go through
// JobFeed, as on the coordinator. SubmitJob is FAILED_PRECONDITION: one `fabricd run`
// runs one job. Every call is authenticated as on a coordinator; the job is the operator's,
// and any caller the authenticator lets in may follow or cancel it.
#pragma once

#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "fabric/v1/job.grpc.pb.h"
#include "jobs/job_feed.h"
#include "local/local_job.h"
#include "security/authenticator.h"
#include "security/stream_limiter.h"

namespace fabric::launcher {

class LocalJobService final : public fabric::v1::JobService::Service, public JobFeed {
 public:
  // `cancel` stops the job (CancelJob; called without the service's lock).
  LocalJobService(const std::string& job_id, const fabric::v1::JobSpec& spec, std::function<void()> cancel,
                  std::shared_ptr<const Authenticator> authenticator);
  ~LocalJobService() override;

  // What to give the LocalJob: its lines and state changes arrive here.
  LocalJobHooks hooks();
  // Streams end with UNAVAILABLE; call before grpc::Server::Shutdown.
  void shutdown();
  const std::shared_ptr<const Authenticator>& authenticator() const { return authenticator_; }
  // The job now, with its progress while it runs (the status page's source).
  fabric::v1::Job job() const;

  grpc::Status SubmitJob(grpc::ServerContext*, const fabric::v1::SubmitJobRequest*,
                         fabric::v1::SubmitJobResponse*) override;
  grpc::Status GetJob(grpc::ServerContext*, const fabric::v1::GetJobRequest* request, fabric::v1::Job* response) override;
  grpc::Status ListJobs(grpc::ServerContext*, const fabric::v1::ListJobsRequest* request,
                        fabric::v1::ListJobsResponse* response) override;
  grpc::Status CancelJob(grpc::ServerContext*, const fabric::v1::CancelJobRequest* request,
                         fabric::v1::Job* response) override;
  grpc::Status WatchJob(grpc::ServerContext* context, const fabric::v1::WatchJobRequest* request,
                        grpc::ServerWriter<fabric::v1::JobEvent>* writer) override;
  grpc::Status StreamLogs(grpc::ServerContext* context, const fabric::v1::StreamLogsRequest* request,
                          grpc::ServerWriter<fabric::v1::LogLine>* writer) override;

  std::mutex& feed_mutex() override { return mutex_; }
  std::condition_variable& feed_changed() override { return changed_; }
  bool feed_closed() const override { return closed_; }
  std::optional<View> view(const std::string& job_id) override;

 private:
  class Lines;
  void change(fabric::v1::JobState state, std::int32_t generation, const std::string& message);
  void record_failure(const fabric::v1::FailureSummary& failure);
  grpc::Status authenticate(const grpc::ServerContext& context, Caller& caller) const;

  const std::string job_id_;
  const std::function<void()> cancel_;
  const std::shared_ptr<const Authenticator> authenticator_;
  StreamLimiter streams_{32};
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  bool closed_ = false;                       // guarded by mutex_
  fabric::v1::Job job_;                       // guarded by mutex_; never holds progress
  std::optional<fabric::v1::JobProgress> progress_;  // the running generation's; guarded by mutex_
  std::vector<fabric::v1::JobEvent> events_;  // guarded by mutex_
  LogBuffer logs_;                            // guarded by mutex_
};

}  // namespace fabric::launcher
