// The job state machine (launcher/jobs/job_state.h) against the transition list in
// JobState's comment in proto/fabric/v1/job.proto: every pair of states is checked.

#include "jobs/job_state.h"

#include <gtest/gtest.h>

#include <set>
#include <string>
#include <utility>

namespace {

namespace v1 = fabric::v1;
using fabric::launcher::can_transition;
using fabric::launcher::is_terminal;
using fabric::launcher::state_name;

constexpr v1::JobState kAll[] = {v1::JOB_STATE_UNSPECIFIED, v1::JOB_STATE_PENDING,   v1::JOB_STATE_RUNNING,
                                 v1::JOB_STATE_RESTARTING,  v1::JOB_STATE_SUCCEEDED, v1::JOB_STATE_FAILED,
                                 v1::JOB_STATE_CANCELLED};

// Exactly the moves job.proto lists (a spawn failure is a failure of a RUNNING
// generation, so PENDING never goes straight to FAILED).
const std::set<std::pair<v1::JobState, v1::JobState>> kLegal = {
    {v1::JOB_STATE_PENDING, v1::JOB_STATE_RUNNING},        {v1::JOB_STATE_RUNNING, v1::JOB_STATE_SUCCEEDED},
    {v1::JOB_STATE_RUNNING, v1::JOB_STATE_RESTARTING},     {v1::JOB_STATE_RUNNING, v1::JOB_STATE_FAILED},
    {v1::JOB_STATE_RESTARTING, v1::JOB_STATE_RUNNING},     {v1::JOB_STATE_RESTARTING, v1::JOB_STATE_PENDING},
    {v1::JOB_STATE_PENDING, v1::JOB_STATE_CANCELLED},      {v1::JOB_STATE_RUNNING, v1::JOB_STATE_CANCELLED},
    {v1::JOB_STATE_RESTARTING, v1::JOB_STATE_CANCELLED},
};

TEST(JobState, TerminalStates_AreSucceededFailedAndCancelled) {
  for (const v1::JobState state : kAll) {
    const bool terminal = state == v1::JOB_STATE_SUCCEEDED || state == v1::JOB_STATE_FAILED ||
                          state == v1::JOB_STATE_CANCELLED;
    EXPECT_EQ(is_terminal(state), terminal) << state_name(state);
  }
}

TEST(JobState, ExactlyTheDocumentedTransitionsAreLegal) {
  for (const v1::JobState from : kAll) {
    for (const v1::JobState to : kAll) {
      EXPECT_EQ(can_transition(from, to), kLegal.contains({from, to}))
          << state_name(from) << " -> " << state_name(to);
    }
  }
}

TEST(JobState, TerminalStates_AreNeverLeft_NotEvenForCancelled) {
  for (const v1::JobState from : {v1::JOB_STATE_SUCCEEDED, v1::JOB_STATE_FAILED, v1::JOB_STATE_CANCELLED}) {
    for (const v1::JobState to : kAll) EXPECT_FALSE(can_transition(from, to)) << state_name(from) << " -> " << state_name(to);
  }
}

TEST(JobState, SomeIllegalMoves_AreRefused) {
  EXPECT_FALSE(can_transition(v1::JOB_STATE_PENDING, v1::JOB_STATE_SUCCEEDED));   // never ran
  EXPECT_FALSE(can_transition(v1::JOB_STATE_PENDING, v1::JOB_STATE_FAILED));      // fails only once running
  EXPECT_FALSE(can_transition(v1::JOB_STATE_RESTARTING, v1::JOB_STATE_FAILED));
  EXPECT_FALSE(can_transition(v1::JOB_STATE_PENDING, v1::JOB_STATE_RESTARTING));  // nothing to restart
  EXPECT_FALSE(can_transition(v1::JOB_STATE_RESTARTING, v1::JOB_STATE_SUCCEEDED));
  EXPECT_FALSE(can_transition(v1::JOB_STATE_RUNNING, v1::JOB_STATE_PENDING));
  EXPECT_FALSE(can_transition(v1::JOB_STATE_RUNNING, v1::JOB_STATE_RUNNING));
  EXPECT_FALSE(can_transition(v1::JOB_STATE_FAILED, v1::JOB_STATE_RUNNING));  // no revival
  EXPECT_FALSE(can_transition(v1::JOB_STATE_UNSPECIFIED, v1::JOB_STATE_PENDING));
  EXPECT_FALSE(can_transition(v1::JOB_STATE_PENDING, v1::JOB_STATE_UNSPECIFIED));
}

TEST(JobState, Names) {
  EXPECT_STREQ(state_name(v1::JOB_STATE_PENDING), "PENDING");
  EXPECT_STREQ(state_name(v1::JOB_STATE_RUNNING), "RUNNING");
  EXPECT_STREQ(state_name(v1::JOB_STATE_RESTARTING), "RESTARTING");
  EXPECT_STREQ(state_name(v1::JOB_STATE_SUCCEEDED), "SUCCEEDED");
  EXPECT_STREQ(state_name(v1::JOB_STATE_FAILED), "FAILED");
  EXPECT_STREQ(state_name(v1::JOB_STATE_CANCELLED), "CANCELLED");
  EXPECT_STREQ(state_name(v1::JOB_STATE_UNSPECIFIED), "UNSPECIFIED");
  EXPECT_STREQ(state_name(static_cast<v1::JobState>(42)), "UNSPECIFIED");  // a newer server's state
}

}  // namespace
