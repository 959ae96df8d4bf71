#include "loggers/run_directory.h"

#include <algorithm>
#include <charconv>

#include "loggers/files.h"

namespace fabric::loggers {
namespace {

constexpr std::string_view kVersionPrefix = "version_";

void validate(const std::optional<Version>& version) {
  if (!version) return;
  if (const auto* number = std::get_if<std::int64_t>(&*version); number && *number < 0) {
    throw ConfigurationError("Logger version=" + std::to_string(*number) +
                             " is negative. Pass a number >= 0 (the directory becomes version_<number>), a directory "
                             "name, or leave version unset to take the next free version_N.");
  }
  if (const auto* text = std::get_if<std::string>(&*version); text && text->empty()) {
    throw ConfigurationError(
        "Logger version=\"\" is empty. Pass a directory name, a number >= 0, or leave version unset to take the next "
        "free version_N.");
  }
}

}  // namespace

std::int64_t next_version(const std::string& directory) {
  std::int64_t next = 0;
  for (const std::string& entry : files::list_directory(directory)) {
    if (!entry.starts_with(kVersionPrefix)) continue;
    const std::string_view digits = std::string_view(entry).substr(kVersionPrefix.size());
    std::int64_t number = 0;
    const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), number);
    const bool all_digits =
        !digits.empty() && std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; });
    if (!all_digits || error != std::errc() || end != digits.data() + digits.size()) continue;
    if (!files::is_directory(files::join(directory, entry))) continue;
    next = std::max(next, number + 1);
  }
  return next;
}

RunDirectory::RunDirectory(std::string root_dir, std::string name, std::optional<Version> version, std::string sub_dir,
                           bool expand_user_and_vars)
    : root_dir_(std::move(root_dir)),
      name_(std::move(name)),
      sub_dir_(std::move(sub_dir)),
      expand_user_and_vars_(expand_user_and_vars),
      version_(std::move(version)) {
  validate(version_);
}

std::string RunDirectory::expand(const std::string& path) const {
  return expand_user_and_vars_ ? files::expand_user_and_vars(path) : path;
}

const Version& RunDirectory::resolved_version() const {
  if (!version_) version_ = next_version(expand(files::join(root_dir_, name_)));
  return *version_;
}

std::string RunDirectory::version() const {
  const Version& version = resolved_version();
  if (const auto* number = std::get_if<std::int64_t>(&version)) return std::to_string(*number);
  return std::get<std::string>(version);
}

std::string RunDirectory::log_dir() const {
  const Version& version = resolved_version();
  const std::string version_dir = std::holds_alternative<std::int64_t>(version)
                                      ? std::string(kVersionPrefix) + std::to_string(std::get<std::int64_t>(version))
                                      : std::get<std::string>(version);
  return expand(files::join(files::join(files::join(root_dir_, name_), version_dir), sub_dir_));
}

}  // namespace fabric::loggers
