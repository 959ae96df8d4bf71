// The job state machine of job.proto (JobState's comment lists the transitions): the one
// place that says which moves are legal. The coordinator asks before every transition, so
// a bug that would, say, revive a FAILED job fails loudly instead of rewriting history.
#pragma once

#include "fabric/v1/job.pb.h"

namespace fabric::launcher {

// Job.failures keeps the last this many failed generations.
inline constexpr int kKeptFailures = 32;

bool is_terminal(fabric::v1::JobState state);
bool can_transition(fabric::v1::JobState from, fabric::v1::JobState to);
// "RUNNING"
const char* state_name(fabric::v1::JobState state);

}  // namespace fabric::launcher
