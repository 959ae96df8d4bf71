#include "cli/security_flags.h"

#include <unistd.h>

#include "ranks/ports.h"
#include "security/certificates.h"

namespace fabric::launcher::cli {

void add_security_flags(CLI::App& command, SecurityFlags& flags, SecurityRole role) {
  const bool server = role == SecurityRole::kServer;
  TlsFiles& tls = flags.transport.tls;
  command
      .add_option("--tls-cert", tls.certificate,
                  role == SecurityRole::kClient ? "a client certificate (PEM) to authenticate with instead of a token"
                                                : "this node's certificate (PEM), signed by the cluster CA")
      ->envname("FABRICD_TLS_CERT");
  command.add_option("--tls-key", tls.private_key, "the private key of --tls-cert (PEM)")->envname("FABRICD_TLS_KEY");
  command.add_option("--tls-ca", tls.ca, "the cluster CA's certificate (PEM): every peer's is checked against it")
      ->envname("FABRICD_TLS_CA");
  if (role != SecurityRole::kAgent) {
    command
        .add_option("--token-file", flags.token_file,
                    server ? "bearer tokens this server accepts, one `TOKEN USER [admin]` per line"
                           : "a file holding this user's bearer token")
        ->envname("FABRICD_TOKEN_FILE");
  }
  command
      .add_flag("--insecure", flags.transport.insecure,
                role == SecurityRole::kClient ? "plain text instead of TLS, to a server started with --insecure"
                                              : "plain text instead of TLS (nodes are not authenticated)")
      ->envname("FABRICD_INSECURE");
}

void check_agent_security(const SecurityFlags& flags) {
  const TlsFiles& tls = flags.transport.tls;
  if (flags.transport.insecure) {
    if (tls.any()) throw CredentialsError("fabricd agent: --insecure and --tls-* contradict each other; pass one");
    return;
  }
  if (tls.certificate.empty() || tls.private_key.empty() || tls.ca.empty()) {
    throw CredentialsError(
        "fabricd agent: an agent authenticates with a node certificate: pass --tls-cert, --tls-key "
        "and --tls-ca (`fabricd certs issue --role node`), or --insecure against a coordinator "
        "started with --insecure");
  }
}

std::shared_ptr<const Authenticator> server_authenticator(const SecurityFlags& flags) {
  TokenTable tokens = flags.token_file.empty() ? TokenTable() : TokenTable::load(flags.token_file);
  const bool open = flags.transport.insecure && tokens.empty();
  return std::make_shared<const Authenticator>(
      AuthenticatorOptions{.tokens = std::move(tokens), .tls = flags.transport.uses_tls(), .open = open});
}

std::string default_node_name(const SecurityFlags& flags) {
  if (flags.transport.uses_tls() && !flags.transport.tls.certificate.empty()) {
    const auto subject = certificate_subject(read_credential_file("--tls-cert", flags.transport.tls.certificate));
    if (subject && !subject->common_name.empty()) return subject->common_name;
  }
  return host_name();
}

std::string client_token(const SecurityFlags& flags) {
  return flags.token_file.empty() ? std::string() : read_client_token(flags.token_file);
}

}  // namespace fabric::launcher::cli
