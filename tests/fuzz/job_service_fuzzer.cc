// libFuzzer harness over the coordinator's JobService (launcher/coordinator): SubmitJob,
// GetJob, ListJobs, CancelJob, WatchJob and StreamLogs, with bearer tokens of an admin, two
// users, a stranger or none, over a fresh Coordinator per input. AgentService calls are
// mixed in at a lower rate so that jobs get placed, run, fail and restart, which is what
// the streams and CancelJob then see. See coordinator_fuzz.h for how an input is decoded.
#include "coordinator_fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider in(data, size);
  fabric::fuzz::Steps steps(in);
  // control, JobService, AgentService, raw bytes on the wire
  steps.run({1, 6, 2, 1}, 40);
  return 0;
}
