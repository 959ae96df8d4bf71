// Lightning's log directory layout, shared by the loggers: root_dir/name/version_N[/sub_dir],
// where N is one past the highest existing root_dir/name/version_<digits> directory, or
// root_dir/name/<version> for a string version. The version is resolved on first use, so a
// logger constructed on every rank touches the file system only where it is used.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "fabric/loggers.h"

namespace fabric::loggers {

class RunDirectory {
 public:
  // Throws ConfigurationError for a negative or empty version. With expand_user_and_vars,
  // "~" and $VARS in the path are expanded (Lightning's TensorBoardLogger does, its
  // CSVLogger does not).
  RunDirectory(std::string root_dir, std::string name, std::optional<Version> version, std::string sub_dir,
               bool expand_user_and_vars);

  const std::string& root_dir() const { return root_dir_; }
  const std::string& name() const { return name_; }
  // "N" for version_N, or the string version.
  std::string version() const;
  std::string log_dir() const;

 private:
  const Version& resolved_version() const;
  std::string expand(const std::string& path) const;

  std::string root_dir_;
  std::string name_;
  std::string sub_dir_;
  bool expand_user_and_vars_;
  mutable std::optional<Version> version_;
};

// The highest N among version_<N> directories in `directory`, plus one; 0 when none.
std::int64_t next_version(const std::string& directory);

}  // namespace fabric::loggers
