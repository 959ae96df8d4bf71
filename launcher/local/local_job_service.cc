#include "local/local_job_service.h"

#include <google/protobuf/util/time_util.h>
#include <unistd.h>

#include "jobs/job_state.h"
#include "ranks/ports.h"

namespace fabric::launcher {

namespace v1 = fabric::v1;
using google::protobuf::util::TimeUtil;

// The job's rank lines, retained for StreamLogs.
class LocalJobService::Lines final : public LineSink {
 public:
  explicit Lines(LocalJobService& service) : service_(service) {}
  void write(const OutputLine& line) override {
    v1::LogLine out;
    out.set_generation(line.generation);
    out.set_rank(line.rank);
    out.set_local_rank(line.local_rank);
    out.set_stream(line.is_stderr ? v1::LOG_STREAM_STDERR : v1::LOG_STREAM_STDOUT);
    out.set_text(line.text);
    *out.mutable_time() = TimeUtil::GetCurrentTime();
    std::lock_guard lock(service_.mutex_);
    out.set_job_id(service_.job_.job_id());
    out.set_node(service_.job_.nodes(0));
    service_.logs_.append(std::move(out));
    service_.changed_.notify_all();
  }

 private:
  LocalJobService& service_;
};

LocalJobService::LocalJobService(const std::string& job_id, const v1::JobSpec& spec, std::function<void()> cancel,
                                 std::shared_ptr<const Authenticator> authenticator)
    : job_id_(job_id), cancel_(std::move(cancel)), authenticator_(std::move(authenticator)), logs_(static_cast<std::size_t>(spec.log().tail_lines())) {
  job_.set_job_id(job_id);
  *job_.mutable_spec() = spec;
  job_.set_state(v1::JOB_STATE_PENDING);
  job_.set_message("starting on this node");
  job_.add_nodes(host_name());
  *job_.mutable_create_time() = TimeUtil::GetCurrentTime();
  v1::JobEvent first;
  *first.mutable_job() = job_;
  *first.mutable_time() = job_.create_time();
  events_.push_back(std::move(first));
}

LocalJobService::~LocalJobService() { shutdown(); }

LocalJobHooks LocalJobService::hooks() {
  return {.lines = std::make_shared<Lines>(*this),
          .on_state = [this](v1::JobState state, std::int32_t generation, const std::string& message) {
            change(state, generation, message);
          },
          .on_failure = [this](const v1::FailureSummary& failure) { record_failure(failure); },
          .on_progress =
              [this](const v1::JobProgress& progress) {
                std::lock_guard lock(mutex_);
                progress_ = progress;
              }};
}

v1::Job LocalJobService::job() const {
  std::lock_guard lock(mutex_);
  v1::Job job = job_;
  if (job.state() == v1::JOB_STATE_RUNNING && progress_) *job.mutable_progress() = *progress_;
  return job;
}

void LocalJobService::record_failure(const v1::FailureSummary& failure) {
  std::lock_guard lock(mutex_);
  *job_.mutable_failure() = failure;
  *job_.add_failures() = failure;
  if (job_.failures_size() > kKeptFailures) job_.mutable_failures()->DeleteSubrange(0, 1);
}

void LocalJobService::shutdown() {
  {
    std::lock_guard lock(mutex_);
    closed_ = true;
  }
  changed_.notify_all();
}

void LocalJobService::change(v1::JobState state, std::int32_t generation, const std::string& message) {
  std::lock_guard lock(mutex_);
  const v1::JobState previous = job_.state();
  if (previous != state && !can_transition(previous, state)) return;  // e.g. CANCELLED, then the run's end
  job_.set_state(state);
  job_.set_message(message);
  job_.set_restart_count(generation);
  progress_.reset();  // of the generation that ran before this change
  const auto now = TimeUtil::GetCurrentTime();
  if (state == v1::JOB_STATE_RUNNING && !job_.has_start_time()) *job_.mutable_start_time() = now;
  if (is_terminal(state)) *job_.mutable_end_time() = now;
  v1::JobEvent event;
  *event.mutable_job() = job_;
  event.set_previous_state(previous);
  *event.mutable_time() = now;
  events_.push_back(std::move(event));
  changed_.notify_all();
}

std::optional<JobFeed::View> LocalJobService::view(const std::string& job_id) {
  if (job_id != job_.job_id()) return std::nullopt;
  return View{.events = &events_, .logs = &logs_, .finished = is_terminal(job_.state())};
}

grpc::Status LocalJobService::authenticate(const grpc::ServerContext& context, Caller& caller) const {
  return authenticator_->client(context, caller);
}

grpc::Status LocalJobService::SubmitJob(grpc::ServerContext* context, const v1::SubmitJobRequest*,
                                        v1::SubmitJobResponse*) {
  Caller caller;
  if (auto s = authenticate(*context, caller); !s.ok()) return s;
  return {grpc::StatusCode::FAILED_PRECONDITION,
          "this is a local fabricd run, which runs its one job; submit to a coordinator (fabricd serve) instead"};
}

grpc::Status LocalJobService::GetJob(grpc::ServerContext* context, const v1::GetJobRequest* request, v1::Job* response) {
  Caller caller;
  if (auto s = authenticate(*context, caller); !s.ok()) return s;
  if (request->job_id() != job_id_) return job_not_found(request->job_id());
  *response = job();
  return grpc::Status::OK;
}

grpc::Status LocalJobService::ListJobs(grpc::ServerContext* context, const v1::ListJobsRequest* request,
                                       v1::ListJobsResponse* response) {
  Caller caller;
  if (auto s = authenticate(*context, caller); !s.ok()) return s;
  if (!request->page_token().empty()) {
    return {grpc::StatusCode::INVALID_ARGUMENT, "page_token does not come from this server's ListJobs"};
  }
  v1::Job current = job();
  bool wanted = request->states().empty();
  for (const int state : request->states()) wanted = wanted || state == current.state();
  if (wanted) *response->add_jobs() = std::move(current);
  return grpc::Status::OK;
}

grpc::Status LocalJobService::CancelJob(grpc::ServerContext* context, const v1::CancelJobRequest* request, v1::Job* response) {
  Caller caller;
  if (auto s = authenticate(*context, caller); !s.ok()) return s;
  std::int32_t generation = 0;
  {
    std::lock_guard lock(mutex_);
    generation = job_.restart_count();
    if (request->job_id() != job_.job_id()) return job_not_found(request->job_id());
    if (job_.state() == v1::JOB_STATE_SUCCEEDED || job_.state() == v1::JOB_STATE_FAILED) {
      return {grpc::StatusCode::FAILED_PRECONDITION, "job " + job_.job_id() + " already ended as " +
                                                         state_name(job_.state()) + "; its outcome is not rewritten"};
    }
  }
  change(v1::JOB_STATE_CANCELLED, generation,
         "cancelled" + (request->reason().empty() ? std::string() : ": " + request->reason()));
  cancel_();
  std::lock_guard lock(mutex_);
  *response = job_;
  return grpc::Status::OK;
}

grpc::Status LocalJobService::WatchJob(grpc::ServerContext* context, const v1::WatchJobRequest* request,
                                       grpc::ServerWriter<v1::JobEvent>* writer) {
  Caller caller;
  if (auto s = authenticate(*context, caller); !s.ok()) return s;
  grpc::Status refusal;
  const auto slot = streams_.acquire(caller.user, refusal);
  if (!slot) return refusal;
  return watch_job(*this, *context, request->job_id(), *writer);
}

grpc::Status LocalJobService::StreamLogs(grpc::ServerContext* context, const v1::StreamLogsRequest* request,
                                         grpc::ServerWriter<v1::LogLine>* writer) {
  Caller caller;
  if (auto s = authenticate(*context, caller); !s.ok()) return s;
  grpc::Status refusal;
  const auto slot = streams_.acquire(caller.user, refusal);
  if (!slot) return refusal;
  return stream_logs(*this, *context, *request, *writer);
}

}  // namespace fabric::launcher
