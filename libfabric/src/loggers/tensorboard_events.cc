#include "loggers/tensorboard_events.h"

#include <type_traits>
#include <utility>
#include <variant>

#include "loggers/protobuf_wire.h"

namespace fabric::loggers::events {
namespace {

// tensorboard.Event
constexpr int kEventWallTime = 1;
constexpr int kEventStep = 2;
constexpr int kEventFileVersion = 3;
constexpr int kEventSummary = 5;
// tensorboard.Summary and Summary.Value
constexpr int kSummaryValue = 1;
constexpr int kValueTag = 1;
constexpr int kValueSimpleValue = 2;
constexpr int kValueMetadata = 9;
// tensorboard.SummaryMetadata and SummaryMetadata.PluginData
constexpr int kMetadataPluginData = 1;
constexpr int kPluginDataPluginName = 1;
constexpr int kPluginDataContent = 2;
// tensorboard.hparams.HParamsPluginData (its version field is 0, proto3's default: omitted)
constexpr int kHParamsExperiment = 2;
constexpr int kHParamsSessionStartInfo = 3;
constexpr int kHParamsSessionEndInfo = 4;
// tensorboard.hparams.Experiment, HParamInfo, MetricInfo, MetricName
constexpr int kExperimentHParamInfos = 4;
constexpr int kExperimentMetricInfos = 5;
constexpr int kHParamInfoName = 1;
constexpr int kHParamInfoType = 4;
constexpr int kMetricInfoName = 1;
constexpr int kMetricNameTag = 2;
// tensorboard.hparams.SessionStartInfo (hparams is map<string, google.protobuf.Value>)
constexpr int kSessionStartHParams = 1;
constexpr int kSessionStartTimeSecs = 5;
constexpr int kMapEntryKey = 1;
constexpr int kMapEntryValue = 2;
// tensorboard.hparams.SessionEndInfo
constexpr int kSessionEndStatus = 1;
// google.protobuf.Value
constexpr int kStructNumberValue = 2;
constexpr int kStructStringValue = 3;
constexpr int kStructBoolValue = 4;
// Enums: tensorboard.hparams.DataType and Status
constexpr int kDataTypeString = 1;
constexpr int kDataTypeBool = 2;
constexpr int kDataTypeFloat64 = 3;
constexpr int kStatusSuccess = 1;

constexpr std::string_view kFileVersion = "brain.Event:2";
constexpr std::string_view kHParamsPluginName = "hparams";
constexpr std::string_view kExperimentTag = "_hparams_/experiment";
constexpr std::string_view kSessionStartInfoTag = "_hparams_/session_start_info";
constexpr std::string_view kSessionEndInfoTag = "_hparams_/session_end_info";

std::string event(double wall_time, std::int64_t step, const ProtoWriter& summary) {
  ProtoWriter message;
  message.add_double(kEventWallTime, wall_time);
  if (step != 0) message.add_int64(kEventStep, step);
  message.add_message(kEventSummary, summary);
  return message.bytes();
}

// An Event whose summary is one HParams-plugin value: a tag and the plugin data, no value.
std::string hparams_plugin_event(double wall_time, std::string_view tag, const ProtoWriter& plugin_data) {
  ProtoWriter plugin;
  plugin.add_bytes(kPluginDataPluginName, kHParamsPluginName).add_bytes(kPluginDataContent, plugin_data.bytes());
  ProtoWriter metadata;
  metadata.add_message(kMetadataPluginData, plugin);
  ProtoWriter value;
  value.add_bytes(kValueTag, tag).add_message(kValueMetadata, metadata);
  ProtoWriter summary;
  summary.add_message(kSummaryValue, value);
  return event(wall_time, 0, summary);
}

// google.protobuf.Value for one hyperparameter, and its HParams DataType.
std::pair<ProtoWriter, int> struct_value(const HyperparameterValue& param) {
  ProtoWriter value;
  int data_type = kDataTypeFloat64;
  std::visit(
      [&](const auto& v) {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, bool>) {
          value.add_bool(kStructBoolValue, v);
          data_type = kDataTypeBool;
        } else if constexpr (std::is_same_v<T, std::string>) {
          value.add_bytes(kStructStringValue, v);
          data_type = kDataTypeString;
        } else {
          value.add_double(kStructNumberValue, static_cast<double>(v));
        }
      },
      param);
  return {std::move(value), data_type};
}

}  // namespace

std::string file_version(double wall_time) {
  ProtoWriter message;
  message.add_double(kEventWallTime, wall_time).add_bytes(kEventFileVersion, kFileVersion);
  return message.bytes();
}

std::string scalar(double wall_time, std::int64_t step, std::string_view tag, float value) {
  ProtoWriter summary_value;
  summary_value.add_bytes(kValueTag, tag).add_float(kValueSimpleValue, value);
  ProtoWriter summary;
  summary.add_message(kSummaryValue, summary_value);
  return event(wall_time, step, summary);
}

std::vector<std::string> hparams(double wall_time, const std::map<std::string, HyperparameterValue>& params,
                                 const std::vector<std::string>& metric_tags) {
  ProtoWriter experiment;
  ProtoWriter session_start;
  for (const auto& [name, param] : params) {
    auto [value, data_type] = struct_value(param);
    ProtoWriter info;
    info.add_bytes(kHParamInfoName, name).add_varint(kHParamInfoType, static_cast<std::uint64_t>(data_type));
    experiment.add_message(kExperimentHParamInfos, info);
    ProtoWriter entry;
    entry.add_bytes(kMapEntryKey, name).add_message(kMapEntryValue, value);
    session_start.add_message(kSessionStartHParams, entry);
  }
  for (const std::string& tag : metric_tags) {
    ProtoWriter metric_name;
    metric_name.add_bytes(kMetricNameTag, tag);
    ProtoWriter info;
    info.add_message(kMetricInfoName, metric_name);
    experiment.add_message(kExperimentMetricInfos, info);
  }
  session_start.add_double(kSessionStartTimeSecs, wall_time);
  ProtoWriter session_end;
  session_end.add_varint(kSessionEndStatus, kStatusSuccess);

  ProtoWriter experiment_data;
  experiment_data.add_message(kHParamsExperiment, experiment);
  ProtoWriter session_start_data;
  session_start_data.add_message(kHParamsSessionStartInfo, session_start);
  ProtoWriter session_end_data;
  session_end_data.add_message(kHParamsSessionEndInfo, session_end);
  return {hparams_plugin_event(wall_time, kExperimentTag, experiment_data),
          hparams_plugin_event(wall_time, kSessionStartInfoTag, session_start_data),
          hparams_plugin_event(wall_time, kSessionEndInfoTag, session_end_data)};
}

}  // namespace fabric::loggers::events
