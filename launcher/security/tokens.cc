#include "security/tokens.h"

#include <fstream>
#include <sstream>

#include "security/secrets.h"

namespace fabric::launcher {

namespace {

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw TokenFileError("cannot read the token file " + path);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

bool skipped(const std::string& line) {
  const auto first = line.find_first_not_of(" \t\r");
  return first == std::string::npos || line[first] == '#';
}

}  // namespace

TokenTable TokenTable::parse(const std::string& text, const std::string& source) {
  TokenTable table;
  std::istringstream lines(text);
  std::string line;
  for (int number = 1; std::getline(lines, line); ++number) {
    if (skipped(line)) continue;
    std::istringstream fields(line);
    std::string token, user, role, extra;
    fields >> token >> user >> role >> extra;
    const std::string where = source + ":" + std::to_string(number);
    if (user.empty() || !extra.empty() || (!role.empty() && role != "admin")) {
      throw TokenFileError(where + ": expected `TOKEN USER` or `TOKEN USER admin`");
    }
    if (token.size() < kMinimumLength) {
      throw TokenFileError(where + ": the token of user '" + user + "' is shorter than " +
                           std::to_string(kMinimumLength) + " characters; make one with `fabricd tokens add`");
    }
    for (const Entry& entry : table.entries_) {
      if (secrets_equal(entry.token, token)) {
        throw TokenFileError(where + ": user '" + user + "' has the same token as user '" + entry.caller.user +
                             "'; every token must be unique");
      }
    }
    table.entries_.push_back({token, Caller{.user = user, .admin = role == "admin"}});
  }
  return table;
}

TokenTable TokenTable::load(const std::string& path) { return parse(read_text(path), path); }

std::optional<Caller> TokenTable::find(const std::string& token) const {
  // Every entry is compared, so the time taken does not say which one matched.
  std::optional<Caller> found;
  for (const Entry& entry : entries_) {
    if (secrets_equal(entry.token, token) && !found) found = entry.caller;
  }
  return found;
}

std::string read_client_token(const std::string& path) {
  std::istringstream lines(read_text(path));
  std::string line;
  while (std::getline(lines, line)) {
    if (skipped(line)) continue;
    const auto first = line.find_first_not_of(" \t");
    const auto last = line.find_last_not_of(" \t\r");
    return line.substr(first, last - first + 1);
  }
  throw TokenFileError("the token file " + path + " holds no token");
}

}  // namespace fabric::launcher
