// JobSpec, the one description of a job (proto/fabric/v1/job.proto): its validation, its
// defaults, and the plain C++ values the launcher's parts take from it. `fabricd run`,
// `fabricd submit` and the coordinator all go through here, so a flag, a spec file and a
// gRPC request mean exactly the same thing.
#pragma once

#include <chrono>
#include <string>

#include "fabric/v1/job.pb.h"
#include "ranks/output_router.h"

namespace fabric::launcher {

// Server defaults for the fields a spec may leave unset.
inline constexpr std::chrono::milliseconds kDefaultHeartbeatTimeout = std::chrono::minutes(5);
inline constexpr std::chrono::milliseconds kDefaultRdzvTimeout = std::chrono::minutes(30);
inline constexpr std::chrono::milliseconds kDefaultGracePeriod = std::chrono::seconds(5);
inline constexpr int kDefaultTailLines = 1000;
// How many stderr lines of the first failing rank a failure summary quotes.
inline constexpr int kSummaryTailLines = 10;

// "" when the spec is usable, else what is wrong, naming the field ("spec.nproc_per_node
// is -1: ..."): the message of an INVALID_ARGUMENT.
std::string validate(const fabric::v1::JobSpec& spec);

// The spec with every default filled in (see SubmitJob in job.proto). Call after validate.
fabric::v1::JobSpec with_defaults(fabric::v1::JobSpec spec);

std::chrono::milliseconds to_milliseconds(const google::protobuf::Duration& duration);
void set_duration(google::protobuf::Duration* duration, std::chrono::milliseconds value);

// The defaults-filled spec's durations.
std::chrono::milliseconds heartbeat_timeout(const fabric::v1::JobSpec& spec);
std::chrono::milliseconds rdzv_timeout(const fabric::v1::JobSpec& spec);
std::chrono::milliseconds grace_period(const fabric::v1::JobSpec& spec);

// What LogOptions makes of the two streams: which go to the files (when log.dir is set)
// and which to a console. With log.dir alone every stream is teed; redirected streams
// leave the console.
StreamSelection file_streams(const fabric::v1::LogOptions& log);
StreamSelection console_streams(const fabric::v1::LogOptions& log);

// Parses a JSON job spec (protobuf's JSON mapping: "nprocPerNode" or "nproc_per_node").
// Unknown fields are refused, naming them. Throws std::invalid_argument.
fabric::v1::JobSpec parse_json_spec(const std::string& text);
// The same spec written as YAML (the same field names; durations as "60s"). Throws
// std::invalid_argument, with the line for a YAML syntax error.
fabric::v1::JobSpec parse_yaml_spec(const std::string& text);

}  // namespace fabric::launcher
