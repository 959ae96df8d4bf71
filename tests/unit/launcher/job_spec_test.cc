// JobSpec validation, defaults, durations, the LogOptions stream choices (torchrun's
// --redirect / --tee) and the JSON and YAML spec parsers (launcher/jobs/job_spec.h).

#include "jobs/job_spec.h"

#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <limits>
#include <stdexcept>
#include <string>

namespace {

namespace v1 = fabric::v1;
using fabric::launcher::console_streams;
using fabric::launcher::file_streams;
using fabric::launcher::grace_period;
using fabric::launcher::heartbeat_timeout;
using fabric::launcher::kDefaultGracePeriod;
using fabric::launcher::kDefaultHeartbeatTimeout;
using fabric::launcher::kDefaultRdzvTimeout;
using fabric::launcher::kDefaultTailLines;
using fabric::launcher::parse_json_spec;
using fabric::launcher::parse_yaml_spec;
using fabric::launcher::rdzv_timeout;
using fabric::launcher::set_duration;
using fabric::launcher::StreamSelection;
using fabric::launcher::to_milliseconds;
using fabric::launcher::validate;
using fabric::launcher::with_defaults;
using namespace std::chrono_literals;

v1::JobSpec usable() {
  v1::JobSpec spec;
  spec.set_program("/opt/train/train.py");
  return spec;
}

// The validation message for a spec that `change` breaks; it must name `field`.
void expect_refused(const std::function<void(v1::JobSpec&)>& change, const std::string& field) {
  v1::JobSpec spec = usable();
  change(spec);
  const std::string problem = validate(spec);
  EXPECT_FALSE(problem.empty()) << "accepted a spec with a bad " << field;
  EXPECT_NE(problem.find(field), std::string::npos) << "'" << problem << "' does not name " << field;
}

TEST(ValidateJobSpec, UsableSpec_HasNoProblem) {
  EXPECT_EQ(validate(usable()), "");
  v1::JobSpec spec = usable();
  spec.set_nproc_per_node(8);
  spec.set_num_nodes(4);
  spec.set_min_nodes(2);
  spec.set_max_restarts(3);
  (*spec.mutable_env())["NCCL_DEBUG"] = "INFO";
  set_duration(spec.mutable_heartbeat_timeout(), 0ms);  // zero: disabled, not negative
  set_duration(spec.mutable_grace_period(), 0ms);
  EXPECT_EQ(validate(spec), "");
}

TEST(ValidateJobSpec, EachBadField_IsNamedInTheMessage) {
  expect_refused([](v1::JobSpec& s) { s.clear_program(); }, "spec.program");
  expect_refused([](v1::JobSpec& s) { s.set_nproc_per_node(-1); }, "spec.nproc_per_node is -1");
  expect_refused([](v1::JobSpec& s) { s.set_num_nodes(-2); }, "spec.num_nodes is -2");
  expect_refused([](v1::JobSpec& s) { s.set_min_nodes(-1); }, "spec.min_nodes is -1");
  expect_refused([](v1::JobSpec& s) { s.set_max_restarts(-1); }, "spec.max_restarts is -1");
  expect_refused([](v1::JobSpec& s) { s.mutable_log()->set_tail_lines(-5); }, "spec.log.tail_lines");
  expect_refused([](v1::JobSpec& s) { (*s.mutable_env())[""] = "x"; }, "spec.env");
  expect_refused([](v1::JobSpec& s) { (*s.mutable_env())["A=B"] = "x"; }, "spec.env has the name 'A=B'");
  expect_refused([](v1::JobSpec& s) { s.mutable_heartbeat_timeout()->set_seconds(-1); }, "spec.heartbeat_timeout");
  expect_refused([](v1::JobSpec& s) { s.mutable_rdzv_timeout()->set_nanos(-1); }, "spec.rdzv_timeout");
  expect_refused([](v1::JobSpec& s) { s.mutable_grace_period()->set_seconds(-3); }, "spec.grace_period");
}

// Sizes no machine has are refused before anything is allocated for them (found by fuzzing:
// a spec asking for 2^31 ranks made the coordinator reserve them).
TEST(ValidateJobSpec, RankAndNodeCountsBeyondAnyCluster_AreRefused) {
  v1::JobSpec spec = usable();
  spec.set_nproc_per_node(4096);
  spec.set_num_nodes(65536);
  EXPECT_EQ(validate(spec), "") << "the limits themselves are allowed";
  expect_refused([](v1::JobSpec& s) { s.set_nproc_per_node(4097); }, "spec.nproc_per_node is 4097");
  expect_refused([](v1::JobSpec& s) { s.set_num_nodes(65537); }, "spec.num_nodes is 65537");
}

TEST(ValidateJobSpec, MinNodesAboveNumNodes_NamesBoth) {
  v1::JobSpec spec = usable();
  spec.set_num_nodes(2);
  spec.set_min_nodes(3);
  const std::string problem = validate(spec);
  EXPECT_NE(problem.find("spec.min_nodes is 3"), std::string::npos) << problem;
  EXPECT_NE(problem.find("spec.num_nodes is 2"), std::string::npos) << problem;
}

TEST(ValidateJobSpec, MinNodesIsCheckedAgainstTheDefaultedNumNodes) {
  v1::JobSpec spec = usable();  // num_nodes 0 means 1
  spec.set_min_nodes(2);
  EXPECT_NE(validate(spec).find("spec.min_nodes"), std::string::npos);
  spec.set_min_nodes(1);
  EXPECT_EQ(validate(spec), "");
}

TEST(WithDefaults, FillsEveryUnsetField) {
  const v1::JobSpec spec = with_defaults(usable());
  EXPECT_EQ(spec.name(), "train.py");
  EXPECT_EQ(spec.nproc_per_node(), 1);
  EXPECT_EQ(spec.num_nodes(), 1);
  EXPECT_EQ(spec.min_nodes(), 1);
  EXPECT_EQ(spec.max_restarts(), 0);
  ASSERT_TRUE(spec.has_heartbeat_timeout());
  ASSERT_TRUE(spec.has_rdzv_timeout());
  ASSERT_TRUE(spec.has_grace_period());
  EXPECT_EQ(to_milliseconds(spec.heartbeat_timeout()), kDefaultHeartbeatTimeout);
  EXPECT_EQ(to_milliseconds(spec.rdzv_timeout()), kDefaultRdzvTimeout);
  EXPECT_EQ(to_milliseconds(spec.grace_period()), kDefaultGracePeriod);
  EXPECT_EQ(spec.log().tail_lines(), kDefaultTailLines);
  EXPECT_EQ(kDefaultHeartbeatTimeout, 5min);
  EXPECT_EQ(kDefaultRdzvTimeout, 30min);
  EXPECT_EQ(kDefaultGracePeriod, 5s);
  EXPECT_EQ(kDefaultTailLines, 1000);
}

TEST(WithDefaults, KeepsWhatTheSpecSays_IncludingExplicitZeroDurations) {
  v1::JobSpec given = usable();
  given.set_name("my-job");
  given.set_nproc_per_node(4);
  given.set_num_nodes(3);
  given.set_min_nodes(2);
  given.mutable_log()->set_tail_lines(50);
  set_duration(given.mutable_heartbeat_timeout(), 0ms);
  set_duration(given.mutable_rdzv_timeout(), 90s);
  set_duration(given.mutable_grace_period(), 0ms);
  const v1::JobSpec spec = with_defaults(given);
  EXPECT_EQ(spec.name(), "my-job");
  EXPECT_EQ(spec.nproc_per_node(), 4);
  EXPECT_EQ(spec.num_nodes(), 3);
  EXPECT_EQ(spec.min_nodes(), 2);
  EXPECT_EQ(spec.log().tail_lines(), 50);
  EXPECT_EQ(heartbeat_timeout(spec), 0ms);  // zero stays zero: no hang detection
  EXPECT_EQ(rdzv_timeout(spec), 90s);
  EXPECT_EQ(grace_period(spec), 0ms);
}

TEST(WithDefaults, MinNodesDefaultsToNumNodes_NotElastic) {
  v1::JobSpec given = usable();
  given.set_num_nodes(4);
  EXPECT_EQ(with_defaults(given).min_nodes(), 4);
}

TEST(WithDefaults, IsIdempotent) {
  const v1::JobSpec once = with_defaults(usable());
  EXPECT_EQ(with_defaults(once).SerializeAsString(), once.SerializeAsString());
}

TEST(Durations, UnsetSpecDurations_ReadAsTheServerDefaults) {
  const v1::JobSpec spec = usable();
  EXPECT_EQ(heartbeat_timeout(spec), kDefaultHeartbeatTimeout);
  EXPECT_EQ(rdzv_timeout(spec), kDefaultRdzvTimeout);
  EXPECT_EQ(grace_period(spec), kDefaultGracePeriod);
}

// Durations of any size convert without overflow: seconds beyond a century saturate (found
// by fuzzing: INT64_MAX seconds overflowed the multiplication into a negative timeout).
TEST(Durations, HugeDurations_SaturateInsteadOfOverflowing) {
  google::protobuf::Duration huge;
  huge.set_seconds(std::numeric_limits<std::int64_t>::max());
  huge.set_nanos(999'999'999);
  const auto century = std::chrono::milliseconds(std::int64_t{100} * 365 * 24 * 3600 * 1000);
  EXPECT_GE(to_milliseconds(huge), century);
  EXPECT_LT(to_milliseconds(huge), century + std::chrono::seconds(1));
  huge.set_seconds(std::numeric_limits<std::int64_t>::min());
  huge.set_nanos(0);
  EXPECT_EQ(to_milliseconds(huge), -century);
}

TEST(Durations, MillisecondsRoundTripThroughProtobufDuration) {
  google::protobuf::Duration duration;
  set_duration(&duration, 2500ms);
  EXPECT_EQ(duration.seconds(), 2);
  EXPECT_EQ(duration.nanos(), 500'000'000);
  EXPECT_EQ(to_milliseconds(duration), 2500ms);
  duration.set_seconds(1);
  duration.set_nanos(999'999);  // below a millisecond: truncated
  EXPECT_EQ(to_milliseconds(duration), 1000ms);
}

v1::LogOptions log(const std::string& dir, v1::Streams redirect, v1::Streams tee) {
  v1::LogOptions options;
  options.set_dir(dir);
  options.set_redirect(redirect);
  options.set_tee(tee);
  return options;
}

void expect_selection(const StreamSelection& got, bool out, bool err, const std::string& what) {
  EXPECT_EQ(got.stdout_lines, out) << what << ": stdout";
  EXPECT_EQ(got.stderr_lines, err) << what << ": stderr";
}

TEST(LogStreams, WithoutADir_NothingGoesToFilesAndEverythingToTheConsole) {
  const auto options = log("", v1::STREAMS_ALL, v1::STREAMS_ALL);
  expect_selection(file_streams(options), false, false, "files");
  expect_selection(console_streams(options), true, true, "console");
}

TEST(LogStreams, DirAlone_TeesEveryStream) {
  const auto options = log("/logs", v1::STREAMS_NONE, v1::STREAMS_NONE);
  expect_selection(file_streams(options), true, true, "files");
  expect_selection(console_streams(options), true, true, "console");
}

TEST(LogStreams, RedirectAndTeeCombinations_AsTorchrunDoes) {
  struct Case {
    v1::Streams redirect, tee;
    bool file_out, file_err, console_out, console_err;
  };
  const Case cases[] = {
      // --redirect 3: both only to files.
      {v1::STREAMS_ALL, v1::STREAMS_NONE, true, true, false, false},
      // --redirect 1: stdout only to its file; stderr stays on the console, in no file.
      {v1::STREAMS_STDOUT, v1::STREAMS_NONE, true, false, false, true},
      // --redirect 2
      {v1::STREAMS_STDERR, v1::STREAMS_NONE, false, true, true, false},
      // --tee 1: stdout to its file and the console; stderr only on the console.
      {v1::STREAMS_NONE, v1::STREAMS_STDOUT, true, false, true, true},
      // --tee 3
      {v1::STREAMS_NONE, v1::STREAMS_ALL, true, true, true, true},
      // --redirect 1 --tee 2: both in files, only stderr on the console.
      {v1::STREAMS_STDOUT, v1::STREAMS_STDERR, true, true, false, true},
      // --redirect 3 --tee 3: redirect wins for the console.
      {v1::STREAMS_ALL, v1::STREAMS_ALL, true, true, false, false},
  };
  for (const Case& c : cases) {
    const auto options = log("/logs", c.redirect, c.tee);
    const std::string what = "redirect " + std::to_string(c.redirect) + " tee " + std::to_string(c.tee);
    expect_selection(file_streams(options), c.file_out, c.file_err, what + ", files");
    expect_selection(console_streams(options), c.console_out, c.console_err, what + ", console");
  }
}

TEST(ParseJsonSpec, AcceptsBothJsonNamesAndProtobufDurations) {
  const v1::JobSpec spec = parse_json_spec(R"({
    "program": "./train",
    "args": ["--epochs", "3"],
    "nprocPerNode": 4,
    "num_nodes": 2,
    "maxRestarts": 1,
    "env": {"NCCL_DEBUG": "INFO"},
    "heartbeatTimeout": "90s",
    "grace_period": "1.5s",
    "log": {"dir": "/logs", "redirect": "STREAMS_STDERR", "tee": 1, "consoleRanks": [0]}
  })");
  EXPECT_EQ(spec.program(), "./train");
  ASSERT_EQ(spec.args_size(), 2);
  EXPECT_EQ(spec.args(1), "3");
  EXPECT_EQ(spec.nproc_per_node(), 4);
  EXPECT_EQ(spec.num_nodes(), 2);
  EXPECT_EQ(spec.max_restarts(), 1);
  EXPECT_EQ(spec.env().at("NCCL_DEBUG"), "INFO");
  EXPECT_EQ(heartbeat_timeout(spec), 90s);
  EXPECT_EQ(grace_period(spec), 1500ms);
  EXPECT_EQ(spec.log().dir(), "/logs");
  EXPECT_EQ(spec.log().redirect(), v1::STREAMS_STDERR);
  EXPECT_EQ(spec.log().tee(), v1::STREAMS_STDOUT);
  ASSERT_EQ(spec.log().console_ranks_size(), 1);
}

void expect_parse_error_naming(const std::string& json, const std::string& name) {
  try {
    parse_json_spec(json);
    ADD_FAILURE() << "accepted " << json;
  } catch (const std::invalid_argument& error) {
    EXPECT_NE(std::string(error.what()).find(name), std::string::npos) << "'" << error.what() << "' does not name " << name;
  }
}

TEST(ParseJsonSpec, RefusesUnknownFields_NamingThem) {
  expect_parse_error_naming(R"({"program": "./train", "nprocsPerNode": 2})", "nprocsPerNode");
  expect_parse_error_naming(R"({"program": "./train", "log": {"colour": true}})", "colour");
}

TEST(ParseJsonSpec, RefusesMalformedJsonAndWrongTypes) {
  EXPECT_THROW(parse_json_spec("{\"program\": "), std::invalid_argument);
  EXPECT_THROW(parse_json_spec(R"({"numNodes": "many"})"), std::invalid_argument);
  EXPECT_THROW(parse_json_spec(R"({"heartbeatTimeout": "soon"})"), std::invalid_argument);
}

TEST(ParseJsonSpec, ParsedSpec_IsLeftToValidate) {
  // A parsed spec is only well-formed; validate() judges it.
  const v1::JobSpec spec = parse_json_spec(R"({"nprocPerNode": -1})");
  EXPECT_NE(validate(spec).find("spec.program"), std::string::npos);
}

TEST(ParseYamlSpec, ReadsTheSameFieldsAsJson) {
  const v1::JobSpec spec = parse_yaml_spec(R"(
program: ./train
args: [--epochs, "3"]
nproc_per_node: 4
numNodes: 2
min_nodes: 1
env:
  OMP_NUM_THREADS: 1
  NCCL_DEBUG: INFO
heartbeat_timeout: 60s
log:
  dir: /logs
  redirect: STREAMS_STDERR
  tee: 1
  console_ranks: [0, 3]
)");
  EXPECT_EQ(spec.program(), "./train");
  ASSERT_EQ(spec.args_size(), 2);
  EXPECT_EQ(spec.args(0), "--epochs");
  EXPECT_EQ(spec.nproc_per_node(), 4);
  EXPECT_EQ(spec.num_nodes(), 2);
  EXPECT_EQ(spec.min_nodes(), 1);
  EXPECT_EQ(spec.env().at("OMP_NUM_THREADS"), "1");  // a number in YAML, a string in the env
  EXPECT_EQ(heartbeat_timeout(spec), 60s);
  EXPECT_EQ(spec.log().redirect(), v1::STREAMS_STDERR);
  EXPECT_EQ(spec.log().tee(), v1::STREAMS_STDOUT);  // an enum by number, as --tee 1
  ASSERT_EQ(spec.log().console_ranks_size(), 2);
  EXPECT_EQ(spec.log().console_ranks(1), 3);
}

TEST(ParseYamlSpec, RefusesUnknownFields_NamingThem) {
  try {
    parse_yaml_spec("program: ./train\nnprocs: 2\n");
    FAIL() << "accepted an unknown field";
  } catch (const std::invalid_argument& error) {
    EXPECT_NE(std::string(error.what()).find("nprocs"), std::string::npos) << error.what();
  }
}

TEST(ParseYamlSpec, SyntaxError_NamesTheLine) {
  try {
    parse_yaml_spec("program: ./train\nargs: [unclosed\nnum_nodes: 2\n");
    FAIL() << "accepted broken YAML";
  } catch (const std::invalid_argument& error) {
    EXPECT_NE(std::string(error.what()).find("line"), std::string::npos) << error.what();
  }
}

// What the refusal says about each limit and malformed input, so the user knows what to change.
void expect_yaml_refused(const std::string& text, const std::string& reason) {
  try {
    parse_yaml_spec(text);
    FAIL() << "accepted a spec that should be refused for: " << reason;
  } catch (const std::invalid_argument& error) {
    EXPECT_NE(std::string(error.what()).find(reason), std::string::npos) << error.what();
  }
}

TEST(ParseYamlSpec, AliasesThatExpandExponentially_AreRefusedByTheirSize) {
  // A "billion laughs": each level refers to the previous one ten times.
  // (Built by appending: GCC 12 warns falsely on "literal" + std::string temporaries.)
  std::string text = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n";
  for (int level = 1; level <= 6; ++level) {
    const std::string name = std::string("a").append(std::to_string(level));
    const std::string previous = std::string("*a").append(std::to_string(level - 1));
    text.append(name).append(": &").append(name).append(" [");
    for (int i = 0; i < 10; ++i) text.append(i ? ", " : "").append(previous);
    text.append("]\n");
  }
  expect_yaml_refused(text, "values once its aliases are expanded");
}

TEST(ParseYamlSpec, DeepNesting_IsRefusedNamingTheDepth) {
  std::string text = "env: ";
  for (int i = 0; i < 40; ++i) text += "[";
  for (int i = 0; i < 40; ++i) text += "]";
  expect_yaml_refused(text + "\n", "nests deeper than 32 levels");
}

TEST(ParseYamlSpec, TextBeyondFourMebibytes_IsRefused) {
  std::string text = "big: &big " + std::string(1 << 20, 'x') + "\nargs: [*big, *big, *big, *big, *big]\n";
  expect_yaml_refused(text, "more than 4 MiB of text");
}

TEST(ParseYamlSpec, BytesThatAreNotUtf8_AreRefusedAsSuch) {
  // A lead byte of a two-byte sequence followed by ASCII (YAML's own \xff escapes are valid).
  expect_yaml_refused(std::string("program: ./tr") + char(0xC3) + "ain\n", "not UTF-8");
}

TEST(ParseYamlSpec, KeysThatAreNotScalars_AreRefusedAsNotFieldNames) {
  expect_yaml_refused("? [program, args]\n: ./train\n", "a key that is not a field name");
}

TEST(ParseYamlSpec, TopLevelMustBeAMapping) {
  EXPECT_THROW(parse_yaml_spec("- program\n- ./train\n"), std::invalid_argument);
  EXPECT_THROW(parse_yaml_spec("just a string"), std::invalid_argument);
}

}  // namespace
