// Transport security for fabricd's servers and clients: TLS from PEM files, or plain text
// when asked for by name (--insecure). A server with TLS verifies any client certificate
// against the cluster CA during the handshake, so a certificate of another CA, or an
// expired one, is refused before any RPC runs; a client without a certificate gets through
// the handshake and must then authenticate (authenticator.h). A server without TLS may
// only listen on loopback.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <optional>
#include <string>

namespace fabric::launcher {

struct TlsFiles {
  std::string certificate;  // --tls-cert: this process's certificate, PEM
  std::string private_key;  // --tls-key
  std::string ca;           // --tls-ca: the cluster CA that signs every certificate
  [[nodiscard]] bool any() const { return !certificate.empty() || !private_key.empty() || !ca.empty(); }
};

struct TransportSecurity {
  TlsFiles tls;
  bool insecure = false;  // --insecure: plain text, asked for explicitly
  [[nodiscard]] bool uses_tls() const { return !insecure; }
};

struct CredentialsError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The whole content of a PEM (or token) file; CredentialsError naming the flag and the path
// when it cannot be read or is empty.
std::string read_credential_file(const std::string& flag, const std::string& path);

// Whether `listen` (host:port) binds loopback only: 127.0.0.0/8, [::1] or localhost.
bool is_loopback_listen(const std::string& listen);

// The server side. With TLS all three files are required; insecure with TLS files, or
// neither, is an error that says which flags to pass. `who` ("fabricd serve") starts the
// messages. Throws CredentialsError; warns on stderr when insecure.
std::shared_ptr<grpc::ServerCredentials> server_credentials(const TransportSecurity& security, const std::string& who,
                                                            const std::string& listen);

// What a node agent serves its ranks' RendezvousService with: TLS with its own certificate
// (ranks carry no certificate: they authenticate with the job's secret), or null for plain
// text when insecure.
std::shared_ptr<grpc::ServerCredentials> rank_facing_credentials(const TransportSecurity& security);

// What any one fabricd server lets its clients hold, so that no client exhausts the
// daemon: gRPC answers RESOURCE_EXHAUSTED beyond each.
struct ServerLimits {
  int max_message_bytes = 4 << 20;  // the largest request read (gRPC's default, said out loud)
  int max_streams_per_connection = 100;  // concurrent calls on one HTTP/2 connection
  // Threads of the synchronous server (each open stream holds one): room for a thousand
  // agents' assignment and log streams.
  int max_threads = 4096;
};
void apply_server_limits(grpc::ServerBuilder& builder, const ServerLimits& limits);

// The client side. TLS needs the CA (to verify the server); a certificate and key are
// optional and authenticate the client. `token`, when not empty, goes with every call as
// `authorization: Bearer …` metadata.
std::shared_ptr<grpc::Channel> secure_channel(const std::string& target, const TransportSecurity& security,
                                              const std::string& token = "",
                                              const grpc::ChannelArguments& arguments = {});

}  // namespace fabric::launcher
