#include "security/authenticator.h"

#include <grpc/grpc_security_constants.h>

#include <algorithm>
#include <cctype>
#include <optional>

#include "security/certificates.h"

namespace fabric::launcher {

namespace {

grpc::Status unauthenticated(const std::string& message) { return {grpc::StatusCode::UNAUTHENTICATED, message}; }

// The verified certificate the peer presented in the TLS handshake, if any.
std::optional<CertificateSubject> peer_certificate(const grpc::ServerContext& context) {
  const std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
  if (!auth || !auth->IsPeerAuthenticated()) return std::nullopt;
  const std::vector<grpc::string_ref> pem = auth->FindPropertyValues(GRPC_X509_PEM_CERT_PROPERTY_NAME);
  if (pem.empty()) return std::nullopt;
  return certificate_subject(std::string(pem.front().data(), pem.front().size()));
}

std::optional<std::string> authorization_of(const grpc::ServerContext& context) {
  const auto& metadata = context.client_metadata();
  const auto it = metadata.find("authorization");
  if (it == metadata.end()) return std::nullopt;
  return std::string(it->second.data(), it->second.size());
}

std::optional<std::string> bearer_token(const std::optional<std::string>& authorization, bool& malformed) {
  if (!authorization) return std::nullopt;
  const std::string& value = *authorization;
  // The scheme is case-insensitive (RFC 9110, 11.1).
  constexpr std::string_view kScheme = "bearer ";
  const bool bearer = value.size() > kScheme.size() &&
                      std::equal(kScheme.begin(), kScheme.end(), value.begin(),
                                 [](char a, char b) { return a == std::tolower(static_cast<unsigned char>(b)); });
  if (!bearer) {
    malformed = true;
    return std::nullopt;
  }
  return value.substr(kScheme.size());
}

}  // namespace

grpc::Status Authenticator::client(const grpc::ServerContext& context, Caller& caller) const {
  return client_of(authorization_of(context), peer_certificate(context), caller);
}

grpc::Status Authenticator::http_client(const std::string& authorization, Caller& caller) const {
  return client_of(authorization.empty() ? std::nullopt : std::optional(authorization), std::nullopt, caller);
}

grpc::Status Authenticator::client_of(const std::optional<std::string>& authorization,
                                      const std::optional<CertificateSubject>& subject, Caller& caller) const {
  bool malformed = false;
  if (const std::optional<std::string> token = bearer_token(authorization, malformed)) {
    if (const std::optional<Caller> known = options_.tokens.find(*token)) {
      caller = *known;
      return grpc::Status::OK;
    }
    return unauthenticated("the bearer token is not one this coordinator accepts; check --token-file");
  }
  if (malformed) return unauthenticated("the authorization metadata must be `Bearer TOKEN`");
  if (subject) {
    if (subject->role == CertificateRole::kUser || subject->role == CertificateRole::kAdmin) {
      caller = {.user = subject->common_name, .admin = subject->role == CertificateRole::kAdmin};
      return grpc::Status::OK;
    }
    return unauthenticated("the client certificate of '" + subject->common_name +
                           "' is not a user's (issue one with `fabricd certs issue --role user`), and no bearer token "
                           "came with the call");
  }
  if (options_.open) {
    caller = {.user = "anonymous", .admin = true};
    return grpc::Status::OK;
  }
  return unauthenticated(
      "no credentials: pass --token-file with a token of this coordinator, or a user certificate "
      "(--tls-cert, --tls-key)");
}

grpc::Status Authenticator::node(const grpc::ServerContext& context, std::string& node_name) const {
  node_name.clear();
  if (!options_.tls) return grpc::Status::OK;
  const std::optional<CertificateSubject> subject = peer_certificate(context);
  if (subject && subject->role == CertificateRole::kNode) {
    node_name = subject->common_name;
    return grpc::Status::OK;
  }
  return unauthenticated(
      "AgentService is for node agents: connect with a node certificate of this cluster's CA "
      "(`fabricd certs issue --role node`)");
}

}  // namespace fabric::launcher
