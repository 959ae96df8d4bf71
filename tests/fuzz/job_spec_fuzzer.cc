// libFuzzer harness over the job-spec file parser (launcher/jobs/job_spec.h): the text of a
// `fabricd submit --spec FILE` goes to parse_json_spec or parse_yaml_spec (the input's first
// byte picks: even JSON, odd YAML; the rest is the file), and a spec that parses goes on
// through validate(), with_defaults() and the duration and stream helpers, as submit and the
// coordinator take it. The contract checked: the parsers throw std::invalid_argument and
// nothing else (any other exception escapes and is a finding), and a spec that validates
// keeps validating once its defaults are filled in.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "jobs/job_spec.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const bool yaml = (data[0] & 1) != 0;
  const std::string text(reinterpret_cast<const char*>(data) + 1, size - 1);
  fabric::v1::JobSpec spec;
  try {
    spec = yaml ? fabric::launcher::parse_yaml_spec(text) : fabric::launcher::parse_json_spec(text);
  } catch (const std::invalid_argument&) {
    return 0;  // the one documented way to refuse a file
  }
  if (!fabric::launcher::validate(spec).empty()) return 0;
  const fabric::v1::JobSpec filled = fabric::launcher::with_defaults(spec);
  if (const std::string problem = fabric::launcher::validate(filled); !problem.empty()) {
    std::fprintf(stderr, "fuzz: a valid spec is invalid with its defaults: %s\n", problem.c_str());
    std::abort();
  }
  (void)fabric::launcher::heartbeat_timeout(filled);
  (void)fabric::launcher::rdzv_timeout(filled);
  (void)fabric::launcher::grace_period(filled);
  (void)fabric::launcher::file_streams(filled.log());
  (void)fabric::launcher::console_streams(filled.log());
  return 0;
}
