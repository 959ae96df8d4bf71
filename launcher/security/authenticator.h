// Authenticator: who is calling a fabricd server, from the call's credentials. Clients of
// JobService authenticate with a bearer token (`authorization: Bearer …`, tokens.h) or a
// user/admin certificate of the cluster CA; node agents calling AgentService with a node
// certificate. Certificates were verified in the TLS handshake (credentials.h); this only
// reads what they say. Every refusal is UNAUTHENTICATED and never quotes a credential.
//
// Thread-safe after construction (it only reads).
#pragma once

#include <grpcpp/grpcpp.h>

#include <optional>
#include <string>

#include "security/certificates.h"
#include "security/tokens.h"

namespace fabric::launcher {

struct AuthenticatorOptions {
  TokenTable tokens;  // may be empty: then only certificates (or `open`) let clients in
  // TLS is on, so a verified peer certificate may be present. Without TLS, AgentService is
  // not authenticated (what --insecure gives up; such a server listens on loopback only).
  bool tls = true;
  // No TLS and no tokens: every client is the admin "anonymous". Only ever from --insecure.
  bool open = false;
};

class Authenticator {
 public:
  explicit Authenticator(AuthenticatorOptions options) : options_(std::move(options)) {}

  // A server that lets everyone in as the admin "anonymous": in-process tests and fuzzers.
  static Authenticator open_to_all() { return Authenticator({.tls = false, .open = true}); }

  // The caller of a JobService method.
  grpc::Status client(const grpc::ServerContext& context, Caller& caller) const;
  // The caller of an HTTP request (the status page) with this Authorization header ("" when
  // it had none): tokens only, since the HTTP listener has no TLS to carry certificates.
  grpc::Status http_client(const std::string& authorization, Caller& caller) const;
  // OK when the caller of an AgentService method is a node of this cluster; `node_name`
  // gets the name its certificate gives it (empty without TLS: then nothing binds it).
  grpc::Status node(const grpc::ServerContext& context, std::string& node_name) const;

 private:
  grpc::Status client_of(const std::optional<std::string>& authorization,
                         const std::optional<CertificateSubject>& subject, Caller& caller) const;
  AuthenticatorOptions options_;
};

}  // namespace fabric::launcher
