// ClusterCredentials: what a test cluster's daemons and clients authenticate with, made by
// the real `fabricd certs` and `fabricd tokens` commands in a directory the caller owns: a
// CA, a node certificate per node (naming its address), and a token per user.
#pragma once

#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "support/processes.h"

namespace fabric::testing {

class ClusterCredentials {
 public:
  // nodes: (name, address) pairs. Throws std::runtime_error with the command's output when
  // fabricd refuses.
  ClusterCredentials(const std::string& fabricd, std::string dir,
                     const std::vector<std::pair<std::string, std::string>>& nodes,
                     const std::vector<std::string>& users)
      : dir_(std::move(dir)) {
    must(fabricd + " certs init " + dir_ + "/pki");
    for (const auto& [name, address] : nodes)
      must(fabricd + " certs issue " + dir_ + "/pki " + name + " --host " + address);
    for (const std::string& user : users) {
      must(fabricd + " tokens add " + tokens() + " " + user + " > " + dir_ + "/" + user + ".token");
    }
  }

  // The coordinator's table of accepted tokens.
  std::string tokens() const { return dir_ + "/tokens"; }
  // A node daemon's flags: its certificate and key, and the CA.
  std::string node_flags(const std::string& node) const {
    const std::string pki = dir_ + "/pki/";
    return " --tls-cert " + pki + node + ".pem --tls-key " + pki + node + ".key --tls-ca " + pki + "ca.pem";
  }
  // A client's flags: the CA that verifies the coordinator, and the user's token.
  std::string client_flags(const std::string& user) const {
    return ca_flag() + " --token-file " + dir_ + "/" + user + ".token";
  }
  std::string ca_flag() const { return " --tls-ca " + dir_ + "/pki/ca.pem"; }

 private:
  static void must(const std::string& command) {
    const CommandResult result = run_command(command);
    if (result.status != 0) throw std::runtime_error(command + " failed: " + result.output);
  }
  std::string dir_;
};

}  // namespace fabric::testing
