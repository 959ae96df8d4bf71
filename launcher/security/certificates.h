// Certificates for a fabricd cluster: a cluster CA, and the certificates it signs for node
// agents (and the coordinator), users and admins — what `fabricd certs init|issue` writes.
// Everything cryptographic is OpenSSL's; this file only says what goes into a certificate.
//
// A certificate's role is its subject's organizational unit (OU=fabricd-node, -user or
// -admin), so that the coordinator can tell an agent from a client with a certificate of
// the same CA. Node certificates serve TLS as well as authenticate as clients, and name the
// hosts they serve as subjectAltNames.
#pragma once

#include <chrono>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace fabric::launcher {

enum class CertificateRole { kNode, kUser, kAdmin };

// "node", "user", "admin"; role_from_name answers nullopt for anything else.
const char* role_name(CertificateRole role);
std::optional<CertificateRole> role_from_name(const std::string& name);

// A certificate and its private key, both PEM.
struct KeyPair {
  std::string certificate_pem;
  std::string private_key_pem;
};

struct CertificateRequest {
  std::string common_name;  // the node's or user's name
  CertificateRole role = CertificateRole::kNode;
  // subjectAltNames: DNS names or IP addresses (told apart by parsing). A node certificate
  // always also names localhost and 127.0.0.1, so that a node's own loopback clients verify it.
  std::vector<std::string> hosts;
  std::chrono::system_clock::time_point not_before = std::chrono::system_clock::now();
  std::chrono::system_clock::time_point not_after = not_before + std::chrono::hours(24 * 365);
};

struct CertificateError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A self-signed CA certificate (P-256 key, basicConstraints CA:TRUE) valid for `validity`.
KeyPair make_certificate_authority(const std::string& name, std::chrono::hours validity);

// A certificate for `request`, signed by `ca`. Throws CertificateError when the CA's PEM
// does not parse or a host is empty.
KeyPair issue_certificate(const KeyPair& ca, const CertificateRequest& request);

// Who a peer certificate (PEM, as gRPC's auth context gives it) belongs to.
struct CertificateSubject {
  std::string common_name;
  std::optional<CertificateRole> role;  // nullopt: not a certificate fabricd issued
};
std::optional<CertificateSubject> certificate_subject(const std::string& certificate_pem);

}  // namespace fabric::launcher
