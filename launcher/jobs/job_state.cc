#include "jobs/job_state.h"

namespace fabric::launcher {

namespace v1 = fabric::v1;

bool is_terminal(v1::JobState state) {
  return state == v1::JOB_STATE_SUCCEEDED || state == v1::JOB_STATE_FAILED || state == v1::JOB_STATE_CANCELLED;
}

bool can_transition(v1::JobState from, v1::JobState to) {
  if (is_terminal(from) || from == v1::JOB_STATE_UNSPECIFIED) return false;
  if (to == v1::JOB_STATE_CANCELLED) return true;
  switch (from) {
    case v1::JOB_STATE_PENDING:
      return to == v1::JOB_STATE_RUNNING;
    case v1::JOB_STATE_RUNNING:
      return to == v1::JOB_STATE_SUCCEEDED || to == v1::JOB_STATE_RESTARTING || to == v1::JOB_STATE_FAILED;
    case v1::JOB_STATE_RESTARTING:
      return to == v1::JOB_STATE_RUNNING || to == v1::JOB_STATE_PENDING;
    default:
      return false;
  }
}

const char* state_name(v1::JobState state) {
  switch (state) {
    case v1::JOB_STATE_PENDING: return "PENDING";
    case v1::JOB_STATE_RUNNING: return "RUNNING";
    case v1::JOB_STATE_RESTARTING: return "RESTARTING";
    case v1::JOB_STATE_SUCCEEDED: return "SUCCEEDED";
    case v1::JOB_STATE_FAILED: return "FAILED";
    case v1::JOB_STATE_CANCELLED: return "CANCELLED";
    default: return "UNSPECIFIED";
  }
}

}  // namespace fabric::launcher
