// File-system helpers for the loggers (and FSDP's checkpoint folders), on POSIX calls rather than std::filesystem: libtorch.so
// exports its own copies of std::filesystem functions that programs linking it bind to, and
// some of them crash (see libfabric/README.md). Paths are plain strings. Failures throw
// fabric::LoggerError naming the path, the operation and the system's reason.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace fabric::loggers::files {

// a/b; an empty part is left out ("" / "x" is "x").
std::string join(std::string_view a, std::string_view b);

bool exists(const std::string& path);
bool is_directory(const std::string& path);
bool is_regular_file(const std::string& path);
// The entries of a directory (without "." and ".."); empty when it does not exist.
std::vector<std::string> list_directory(const std::string& path);

// mkdir -p.
void make_directories(const std::string& path);
void remove_file(const std::string& path);
// Writes `contents` to path + ".tmp" and renames it over `path`, so readers see the old or
// the new file, never half of one.
void replace_file(const std::string& path, std::string_view contents);
void rename_file(const std::string& from, const std::string& to);

// Lightning's os.path.expanduser + os.path.expandvars: a leading "~" or "~/" becomes $HOME;
// $NAME and ${NAME} become the variable's value; unset variables are left as written.
std::string expand_user_and_vars(std::string_view path);

// "<what> '<path>' failed: <strerror(errnum)>" as a LoggerError, for the callers' own I/O.
[[noreturn]] void throw_io_error(std::string_view what, const std::string& path, int errnum);

}  // namespace fabric::loggers::files
