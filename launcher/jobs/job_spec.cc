#include "jobs/job_spec.h"

#include <google/protobuf/util/json_util.h>
#include <yaml-cpp/yaml.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <stdexcept>

namespace fabric::launcher {

namespace v1 = fabric::v1;
using std::chrono::milliseconds;

namespace {

std::string negative_duration(const char* field, const google::protobuf::Duration& d) {
  if (d.seconds() < 0 || d.nanos() < 0) {
    return std::string("spec.") + field + " is negative; give a positive duration (or zero to disable)";
  }
  return "";
}

// More than any node or cluster runs, and small enough that every rank number
// (num_nodes * nproc_per_node) fits an int32 and a node's list of ranks is built at once.
constexpr int kMaxProcsPerNode = 4096;
constexpr int kMaxNodes = 65536;

bool selects(v1::Streams set, bool is_stderr) {
  return set == v1::STREAMS_ALL || set == (is_stderr ? v1::STREAMS_STDERR : v1::STREAMS_STDOUT);
}

}  // namespace

std::string validate(const v1::JobSpec& spec) {
  if (spec.program().empty()) return "spec.program is empty; name the executable to run (e.g. ./train)";
  if (spec.nproc_per_node() < 0) {
    return "spec.nproc_per_node is " + std::to_string(spec.nproc_per_node()) + "; use a positive number of ranks per node";
  }
  if (spec.nproc_per_node() > kMaxProcsPerNode) {
    return "spec.nproc_per_node is " + std::to_string(spec.nproc_per_node()) + "; at most " +
           std::to_string(kMaxProcsPerNode) + " ranks run on one node";
  }
  if (spec.num_nodes() < 0) {
    return "spec.num_nodes is " + std::to_string(spec.num_nodes()) + "; use a positive number of nodes";
  }
  if (spec.num_nodes() > kMaxNodes) {
    return "spec.num_nodes is " + std::to_string(spec.num_nodes()) + "; a job runs on at most " +
           std::to_string(kMaxNodes) + " nodes";
  }
  if (spec.min_nodes() < 0) {
    return "spec.min_nodes is " + std::to_string(spec.min_nodes()) + "; use 0 (not elastic) or a positive number";
  }
  const int num_nodes = std::max(spec.num_nodes(), 1);
  if (spec.min_nodes() > num_nodes) {
    return "spec.min_nodes is " + std::to_string(spec.min_nodes()) + " but spec.num_nodes is " +
           std::to_string(num_nodes) + "; an elastic range MIN:MAX needs MIN <= MAX";
  }
  if (spec.max_restarts() < 0) {
    return "spec.max_restarts is " + std::to_string(spec.max_restarts()) + "; use 0 or more";
  }
  if (spec.log().tail_lines() < 0) return "spec.log.tail_lines is negative; use 0 for the default or more";
  for (const auto& [name, _] : spec.env()) {
    if (name.empty() || name.find('=') != std::string::npos) {
      return "spec.env has the name '" + name + "'; environment names are non-empty and contain no '='";
    }
  }
  for (auto [field, duration] : {std::pair{"heartbeat_timeout", &spec.heartbeat_timeout()},
                                 std::pair{"rdzv_timeout", &spec.rdzv_timeout()},
                                 std::pair{"grace_period", &spec.grace_period()}}) {
    if (auto problem = negative_duration(field, *duration); !problem.empty()) return problem;
  }
  return "";
}

v1::JobSpec with_defaults(v1::JobSpec spec) {
  if (spec.name().empty()) spec.set_name(std::filesystem::path(spec.program()).filename().string());
  if (spec.nproc_per_node() == 0) spec.set_nproc_per_node(1);
  if (spec.num_nodes() == 0) spec.set_num_nodes(1);
  if (spec.min_nodes() == 0) spec.set_min_nodes(spec.num_nodes());
  if (!spec.has_heartbeat_timeout()) set_duration(spec.mutable_heartbeat_timeout(), kDefaultHeartbeatTimeout);
  if (!spec.has_rdzv_timeout()) set_duration(spec.mutable_rdzv_timeout(), kDefaultRdzvTimeout);
  if (!spec.has_grace_period()) set_duration(spec.mutable_grace_period(), kDefaultGracePeriod);
  if (spec.log().tail_lines() == 0) spec.mutable_log()->set_tail_lines(kDefaultTailLines);
  return spec;
}

milliseconds to_milliseconds(const google::protobuf::Duration& d) {
  // Saturated at 100 years either way, so that neither this nor a caller's deadline (now plus
  // the value, in nanoseconds) overflows whatever seconds a request carries.
  constexpr std::int64_t kMaxSeconds = std::int64_t{100} * 365 * 24 * 3600;
  return milliseconds(std::clamp<std::int64_t>(d.seconds(), -kMaxSeconds, kMaxSeconds) * 1000 + d.nanos() / 1'000'000);
}

void set_duration(google::protobuf::Duration* duration, milliseconds value) {
  duration->set_seconds(value.count() / 1000);
  duration->set_nanos(static_cast<std::int32_t>(value.count() % 1000) * 1'000'000);
}

milliseconds heartbeat_timeout(const v1::JobSpec& spec) {
  return spec.has_heartbeat_timeout() ? to_milliseconds(spec.heartbeat_timeout()) : kDefaultHeartbeatTimeout;
}
milliseconds rdzv_timeout(const v1::JobSpec& spec) {
  return spec.has_rdzv_timeout() ? to_milliseconds(spec.rdzv_timeout()) : kDefaultRdzvTimeout;
}
milliseconds grace_period(const v1::JobSpec& spec) {
  return spec.has_grace_period() ? to_milliseconds(spec.grace_period()) : kDefaultGracePeriod;
}

StreamSelection file_streams(const v1::LogOptions& log) {
  if (log.dir().empty()) return {.stdout_lines = false, .stderr_lines = false};
  const bool any = log.redirect() != v1::STREAMS_NONE || log.tee() != v1::STREAMS_NONE;
  if (!any) return {};
  return {.stdout_lines = selects(log.redirect(), false) || selects(log.tee(), false),
          .stderr_lines = selects(log.redirect(), true) || selects(log.tee(), true)};
}

StreamSelection console_streams(const v1::LogOptions& log) {
  if (log.dir().empty()) return {};
  return {.stdout_lines = !selects(log.redirect(), false), .stderr_lines = !selects(log.redirect(), true)};
}

v1::JobSpec parse_json_spec(const std::string& text) {
  v1::JobSpec spec;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  const auto status = google::protobuf::util::JsonStringToMessage(text, &spec, options);
  if (!status.ok()) throw std::invalid_argument("the job spec is not a valid JobSpec: " + status.ToString());
  return spec;
}

namespace {

// A JobSpec is a few levels deep and a few thousand values at most, and no request larger
// than 4 MiB reaches a coordinator. The limits refuse a file whose aliases refer to
// themselves (endless recursion) or expand exponentially.
constexpr int kMaxYamlDepth = 32;
constexpr std::size_t kMaxYamlValues = 100'000;
constexpr std::size_t kMaxYamlBytes = std::size_t{4} << 20;

struct YamlBudget {
  std::size_t values = 0;
  std::size_t bytes = 0;
  std::string text(std::string value) {
    if ((bytes += value.size()) > kMaxYamlBytes) {
      throw std::invalid_argument("the job spec holds more than " + std::to_string(kMaxYamlBytes >> 20) +
                                  " MiB of text once its aliases are expanded");
    }
    return value;
  }
};

// YAML to JSON for protobuf's parser. Every scalar becomes a JSON string: proto3's JSON
// mapping takes "4" for an int32, enum names and "60s" durations as strings, and JobSpec
// has no bool field, so an env value such as `OMP_NUM_THREADS: 1` stays a string.
nlohmann::json to_json(const YAML::Node& node, int depth, YamlBudget& used) {
  if (depth > kMaxYamlDepth) {
    throw std::invalid_argument("the job spec nests deeper than " + std::to_string(kMaxYamlDepth) +
                                " levels (or an alias refers to itself)");
  }
  if (++used.values > kMaxYamlValues) {
    throw std::invalid_argument("the job spec holds more than " + std::to_string(kMaxYamlValues) +
                                " values once its aliases are expanded");
  }
  switch (node.Type()) {
    case YAML::NodeType::Map: {
      nlohmann::json object = nlohmann::json::object();
      for (const auto& entry : node) {
        object[used.text(entry.first.as<std::string>())] = to_json(entry.second, depth + 1, used);
      }
      return object;
    }
    case YAML::NodeType::Sequence: {
      nlohmann::json array = nlohmann::json::array();
      for (const auto& item : node) array.push_back(to_json(item, depth + 1, used));
      return array;
    }
    case YAML::NodeType::Scalar:
      return used.text(node.as<std::string>());
    default:
      return nullptr;
  }
}

}  // namespace

v1::JobSpec parse_yaml_spec(const std::string& text) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& error) {
    throw std::invalid_argument(std::string("the job spec is not valid YAML: ") + error.what());
  }
  if (!root.IsMap()) throw std::invalid_argument("the job spec must be a YAML mapping of JobSpec fields");
  std::string json;
  try {
    YamlBudget used;
    json = to_json(root, 0, used).dump();
  } catch (const YAML::Exception& error) {  // a key that is a mapping or a sequence
    throw std::invalid_argument(std::string("the job spec has a key that is not a field name: ") + error.what());
  } catch (const nlohmann::json::exception& error) {  // bytes that are not UTF-8
    throw std::invalid_argument(std::string("the job spec is not UTF-8 text: ") + error.what());
  }
  return parse_json_spec(json);
}

}  // namespace fabric::launcher
