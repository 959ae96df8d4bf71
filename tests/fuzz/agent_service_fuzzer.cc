// libFuzzer harness over the coordinator's AgentService (launcher/coordinator): Register,
// Heartbeat, StreamAssignments, ReportRankExit and PushLogs as agents — and impostors — send
// them, over a fresh Coordinator per input, with the fake clock jumping so that sessions
// are lost, and the coordinator restarted over its store. JobService calls are mixed in at
// a lower rate so that there are jobs to place, report on and log for. See
// coordinator_fuzz.h for how an input is decoded.
#include "coordinator_fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider in(data, size);
  fabric::fuzz::Steps steps(in);
  // control, JobService, AgentService, raw bytes on the wire
  steps.run({2, 2, 6, 1}, 40);
  return 0;
}
