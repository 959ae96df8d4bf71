// The serialized TensorBoard Event messages the TensorBoard logger writes. Field numbers
// follow tensorboard/compat/proto/{event,summary}.proto, plugins/hparams/{api,plugin_data}.proto
// and google/protobuf/struct.proto; the hparams events are the three summaries that
// torch.utils.tensorboard.summary.hparams() builds.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "fabric/loggers.h"

namespace fabric::loggers::events {

// The first record of every event file: Event{wall_time, file_version: "brain.Event:2"}.
std::string file_version(double wall_time);

// Event{wall_time, step, summary{value{tag, simple_value}}}: what SummaryWriter.add_scalar writes.
std::string scalar(double wall_time, std::int64_t step, std::string_view tag, float value);

// The HParams plugin's experiment (hyperparameter names and types, metric tags),
// session_start_info (the values) and session_end_info (STATUS_SUCCESS) events, in that
// order. Integers and doubles are numbers, bools are bools, strings are strings.
std::vector<std::string> hparams(double wall_time, const std::map<std::string, HyperparameterValue>& params,
                                 const std::vector<std::string>& metric_tags);

}  // namespace fabric::loggers::events
