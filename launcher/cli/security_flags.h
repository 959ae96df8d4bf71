// The security flags of fabricd's servers (serve, agent, run --serve) and clients (submit,
// list, ...): TLS files, tokens and --insecure, each also read from an environment variable
// (FABRICD_TLS_CERT, FABRICD_TLS_KEY, FABRICD_TLS_CA, FABRICD_TOKEN_FILE, FABRICD_INSECURE)
// so that a systemd environment file or a shell profile sets them once.
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <string>

#include "security/authenticator.h"
#include "security/credentials.h"

namespace fabric::launcher::cli {

struct SecurityFlags {
  TransportSecurity transport;
  // Servers: the tokens file (TOKEN USER [admin] per line). Clients: a file with one token.
  std::string token_file;
};

enum class SecurityRole {
  kServer,  // serve, run --serve: --token-file is the table of accepted tokens
  kAgent,   // agent: a node certificate, no token
  kClient,  // submit, list, ...: --token-file holds the user's own token
};

void add_security_flags(CLI::App& command, SecurityFlags& flags, SecurityRole role);

// An agent's transport: TLS with all three files, or --insecure. Throws CredentialsError
// saying which flags to pass.
void check_agent_security(const SecurityFlags& flags);

// The authenticator a server's flags describe. Throws TokenFileError / CredentialsError.
std::shared_ptr<const Authenticator> server_authenticator(const SecurityFlags& flags);

// The node name a daemon goes by when --node-name is not given: its certificate's common
// name with TLS (the coordinator accepts no other), else the host name.
std::string default_node_name(const SecurityFlags& flags);

// The token a client's flags name, or "" for none. Throws TokenFileError.
std::string client_token(const SecurityFlags& flags);

}  // namespace fabric::launcher::cli
