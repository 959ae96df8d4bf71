// TokenTable: the bearer tokens a coordinator accepts, each mapped to a user, read from the
// file given as `--token-file`. One token per line: `TOKEN USER [admin]`; blank lines and
// lines starting with '#' are skipped. A token is looked up by comparing it with every
// entry in constant time (secrets_equal), so neither its content nor which entry matched
// shows in the time taken; tokens never appear in a message.
#pragma once

#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace fabric::launcher {

// Who a credential says the caller is.
struct Caller {
  std::string user;
  bool admin = false;
};

struct TokenFileError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class TokenTable {
 public:
  // Tokens shorter than this are refused: `fabricd tokens add` makes 64 hex digits.
  static constexpr std::size_t kMinimumLength = 16;

  TokenTable() = default;
  // Parses the text of a token file; `source` names it in errors. Throws TokenFileError
  // naming the line of a malformed entry, a short token, or a token given twice.
  static TokenTable parse(const std::string& text, const std::string& source);
  static TokenTable load(const std::string& path);

  [[nodiscard]] bool empty() const { return entries_.empty(); }
  [[nodiscard]] std::size_t size() const { return entries_.size(); }
  // The caller `token` belongs to; nullopt when it is no known token.
  [[nodiscard]] std::optional<Caller> find(const std::string& token) const;

 private:
  struct Entry {
    std::string token;
    Caller caller;
  };
  std::vector<Entry> entries_;
};

// The first non-empty, non-comment line of a client's token file, trimmed. Throws
// TokenFileError when the file cannot be read or holds no token.
std::string read_client_token(const std::string& path);

}  // namespace fabric::launcher
