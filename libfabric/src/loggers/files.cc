#include "loggers/files.h"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "fabric/loggers.h"

namespace fabric::loggers::files {
namespace {

bool stat_mode(const std::string& path, mode_t& mode) {
  struct stat info {};
  if (::stat(path.c_str(), &info) != 0) return false;
  mode = info.st_mode;
  return true;
}

// Python's expandvars takes \w+ after "$".
bool is_name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

}  // namespace

void throw_io_error(std::string_view what, const std::string& path, int errnum) {
  throw LoggerError(std::string(what) + " '" + path + "' failed: " + std::strerror(errnum) +
                    ". Check that the directory exists or can be created, is writable, and that the disk is not "
                    "full; or point the logger's root_dir elsewhere.");
}

std::string join(std::string_view a, std::string_view b) {
  if (a.empty()) return std::string(b);
  if (b.empty()) return std::string(a);
  std::string joined(a);
  if (joined.back() != '/') joined.push_back('/');
  joined.append(b);
  return joined;
}

bool exists(const std::string& path) {
  mode_t mode = 0;
  return stat_mode(path, mode);
}

bool is_directory(const std::string& path) {
  mode_t mode = 0;
  return stat_mode(path, mode) && S_ISDIR(mode);
}

bool is_regular_file(const std::string& path) {
  mode_t mode = 0;
  return stat_mode(path, mode) && S_ISREG(mode);
}

std::vector<std::string> list_directory(const std::string& path) {
  std::vector<std::string> names;
  std::unique_ptr<DIR, int (*)(DIR*)> dir(::opendir(path.empty() ? "." : path.c_str()), &::closedir);
  if (!dir) {
    if (errno == ENOENT || errno == ENOTDIR) return names;
    throw_io_error("Listing the directory", path, errno);
  }
  while (const dirent* entry = ::readdir(dir.get())) {
    const std::string_view name = entry->d_name;
    if (name != "." && name != "..") names.emplace_back(name);
  }
  return names;
}

void make_directories(const std::string& path) {
  if (path.empty() || is_directory(path)) return;
  std::size_t position = 0;
  while (position != std::string::npos) {
    position = path.find('/', position + 1);
    const std::string prefix = path.substr(0, position);
    if (prefix.empty() || is_directory(prefix)) continue;
    if (::mkdir(prefix.c_str(), 0777) == 0) continue;
    const int mkdir_errno = errno;
    if (mkdir_errno == EEXIST && is_directory(prefix)) continue;  // made concurrently
    const int error = mkdir_errno == EEXIST ? ENOTDIR : mkdir_errno;
    if (prefix == path) throw_io_error("Creating the directory", path, error);
    throw_io_error("Creating the directory '" + prefix + "' for", path, error);
  }
}

void remove_file(const std::string& path) {
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) throw_io_error("Removing", path, errno);
}

void rename_file(const std::string& from, const std::string& to) {
  if (std::rename(from.c_str(), to.c_str()) != 0) throw_io_error("Renaming '" + from + "' to", to, errno);
}

void replace_file(const std::string& path, std::string_view contents) {
  const std::string temporary = path + ".tmp";
  std::FILE* file = std::fopen(temporary.c_str(), "wb");
  if (file == nullptr) throw_io_error("Opening", temporary, errno);
  const bool written = std::fwrite(contents.data(), 1, contents.size(), file) == contents.size();
  const int write_errno = errno;
  if (std::fclose(file) != 0 || !written) {
    const int error = written ? errno : write_errno;
    std::remove(temporary.c_str());
    throw_io_error("Writing", temporary, error);
  }
  rename_file(temporary, path);
}

std::string expand_user_and_vars(std::string_view path) {
  std::string expanded;
  if (!path.empty() && path[0] == '~' && (path.size() == 1 || path[1] == '/')) {
    const char* home = std::getenv("HOME");
    if (home != nullptr) {
      expanded = home;
      path.remove_prefix(1);
    }
  }
  for (std::size_t i = 0; i < path.size();) {
    if (path[i] == '$') {
      const bool braced = i + 1 < path.size() && path[i + 1] == '{';
      const std::size_t start = i + (braced ? 2 : 1);
      std::size_t end = start;
      if (braced) {
        end = path.find('}', start);
      } else {
        while (end < path.size() && is_name_char(path[end])) ++end;
      }
      if (end != std::string_view::npos && end > start) {
        const std::string name(path.substr(start, end - start));
        const std::size_t after = braced ? end + 1 : end;
        if (const char* value = std::getenv(name.c_str())) {
          expanded += value;
        } else {
          expanded += path.substr(i, after - i);
        }
        i = after;
        continue;
      }
    }
    expanded.push_back(path[i]);
    ++i;
  }
  return expanded;
}

}  // namespace fabric::loggers::files
