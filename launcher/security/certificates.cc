#include "security/certificates.h"

#include <arpa/inet.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <memory>
#include <set>

namespace fabric::launcher {

namespace {

// OpenSSL objects owned by unique_ptrs with their own free functions.
template <typename T, void (*Free)(T*)>
struct Deleter {
  void operator()(T* p) const { Free(p); }
};
using Bio = std::unique_ptr<BIO, Deleter<BIO, BIO_free_all>>;
using Key = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY, EVP_PKEY_free>>;
using Certificate = std::unique_ptr<X509, Deleter<X509, X509_free>>;
using Extension = std::unique_ptr<X509_EXTENSION, Deleter<X509_EXTENSION, X509_EXTENSION_free>>;
using BigNumber = std::unique_ptr<BIGNUM, Deleter<BIGNUM, BN_free>>;

[[noreturn]] void fail(const std::string& what) {
  const unsigned long code = ERR_get_error();
  char reason[256] = "";
  if (code != 0) ERR_error_string_n(code, reason, sizeof(reason));
  throw CertificateError(what + (code != 0 ? std::string(" (OpenSSL: ") + reason + ")" : std::string()));
}

// The subject's OU that carries a certificate's role: "fabricd-node", "-user", "-admin".
std::string organizational_unit(CertificateRole role) { return std::string("fabricd-") + role_name(role); }

Key new_key() {
  Key key(EVP_EC_gen("P-256"));
  if (!key) fail("cannot generate a P-256 key");
  return key;
}

std::string to_pem(const X509* certificate) {
  Bio bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509(bio.get(), certificate) != 1) fail("cannot write a certificate as PEM");
  char* data = nullptr;
  const long size = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<std::size_t>(size));
}

std::string to_pem(const EVP_PKEY* key) {
  Bio bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    fail("cannot write a private key as PEM");
  }
  char* data = nullptr;
  const long size = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<std::size_t>(size));
}

Bio read_bio(const std::string& pem) {
  Bio bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) fail("out of memory reading PEM");
  return bio;
}

Certificate parse_certificate(const std::string& pem) {
  Bio bio = read_bio(pem);
  return Certificate(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
}

void add_extension(X509* certificate, const X509* issuer, int nid, const std::string& value) {
  X509V3_CTX context;
  X509V3_set_ctx_nodb(&context);
  X509V3_set_ctx(&context, const_cast<X509*>(issuer), certificate, nullptr, nullptr, 0);
  Extension extension(X509V3_EXT_conf_nid(nullptr, &context, nid, value.c_str()));
  if (!extension || X509_add_ext(certificate, extension.get(), -1) != 1) {
    fail(std::string("cannot add the extension ") + OBJ_nid2sn(nid) + " = " + value);
  }
}

bool is_ip_address(const std::string& host) {
  unsigned char buffer[16];
  return inet_pton(AF_INET, host.c_str(), buffer) == 1 || inet_pton(AF_INET6, host.c_str(), buffer) == 1;
}

std::string subject_alt_names(const CertificateRequest& request) {
  std::set<std::string> hosts(request.hosts.begin(), request.hosts.end());
  hosts.insert(request.common_name);
  if (request.role == CertificateRole::kNode) hosts.insert({"localhost", "127.0.0.1"});
  std::string names;
  for (const std::string& host : hosts) {
    if (host.empty()) throw CertificateError("a certificate host is empty; name a DNS name or an IP address");
    if (!names.empty()) names += ",";
    names += (is_ip_address(host) ? "IP:" : "DNS:") + host;
  }
  return names;
}

// A certificate for `key` with a random serial, the subject and validity given, issued by
// `issuer` (itself when null).
Certificate new_certificate(const EVP_PKEY* key, const std::string& common_name, const std::string& unit,
                            std::chrono::system_clock::time_point not_before,
                            std::chrono::system_clock::time_point not_after) {
  Certificate certificate(X509_new());
  if (!certificate || X509_set_version(certificate.get(), 2) != 1) fail("cannot create a certificate");
  BigNumber serial(BN_new());
  if (!serial || BN_rand(serial.get(), 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) != 1 ||
      !BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(certificate.get()))) {
    fail("cannot make a serial number");
  }
  if (!ASN1_TIME_set(X509_getm_notBefore(certificate.get()), std::chrono::system_clock::to_time_t(not_before)) ||
      !ASN1_TIME_set(X509_getm_notAfter(certificate.get()), std::chrono::system_clock::to_time_t(not_after))) {
    fail("cannot set the validity");
  }
  if (X509_set_pubkey(certificate.get(), const_cast<EVP_PKEY*>(key)) != 1) fail("cannot set the public key");
  X509_NAME* subject = X509_get_subject_name(certificate.get());
  const auto add = [&](const char* field, const std::string& value) {
    if (X509_NAME_add_entry_by_txt(subject, field, MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(value.c_str()),
                                   -1, -1, 0) != 1) {
      fail(std::string("cannot set the subject's ") + field + " to '" + value + "'");
    }
  };
  add("O", "fabricd");
  add("OU", unit);
  add("CN", common_name);
  return certificate;
}

void sign(X509* certificate, const EVP_PKEY* key) {
  if (X509_sign(certificate, const_cast<EVP_PKEY*>(key), EVP_sha256()) == 0) fail("cannot sign the certificate");
}

}  // namespace

const char* role_name(CertificateRole role) {
  switch (role) {
    case CertificateRole::kNode:
      return "node";
    case CertificateRole::kUser:
      return "user";
    case CertificateRole::kAdmin:
      return "admin";
  }
  return "";
}

std::optional<CertificateRole> role_from_name(const std::string& name) {
  for (const CertificateRole role : {CertificateRole::kNode, CertificateRole::kUser, CertificateRole::kAdmin}) {
    if (name == role_name(role)) return role;
  }
  return std::nullopt;
}

KeyPair make_certificate_authority(const std::string& name, std::chrono::hours validity) {
  if (name.empty()) throw CertificateError("the CA's name is empty");
  const Key key = new_key();
  const auto now = std::chrono::system_clock::now();
  Certificate ca = new_certificate(key.get(), name, "fabricd-ca", now - std::chrono::minutes(5), now + validity);
  if (X509_set_issuer_name(ca.get(), X509_get_subject_name(ca.get())) != 1) fail("cannot set the CA's issuer");
  add_extension(ca.get(), ca.get(), NID_basic_constraints, "critical,CA:TRUE,pathlen:0");
  add_extension(ca.get(), ca.get(), NID_key_usage, "critical,keyCertSign,cRLSign");
  add_extension(ca.get(), ca.get(), NID_subject_key_identifier, "hash");
  sign(ca.get(), key.get());
  return {to_pem(ca.get()), to_pem(key.get())};
}

KeyPair issue_certificate(const KeyPair& ca, const CertificateRequest& request) {
  if (request.common_name.empty()) throw CertificateError("the certificate's name is empty");
  const Certificate ca_certificate = parse_certificate(ca.certificate_pem);
  if (!ca_certificate) fail("the CA certificate is not a PEM certificate");
  Bio key_bio = read_bio(ca.private_key_pem);
  const Key ca_key(PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr));
  if (!ca_key) fail("the CA key is not a PEM private key");
  if (X509_check_private_key(ca_certificate.get(), ca_key.get()) != 1) {
    throw CertificateError("the CA key does not belong to the CA certificate");
  }
  const Key key = new_key();
  Certificate certificate = new_certificate(key.get(), request.common_name, organizational_unit(request.role),
                                            request.not_before, request.not_after);
  if (X509_set_issuer_name(certificate.get(), X509_get_subject_name(ca_certificate.get())) != 1) {
    fail("cannot set the issuer");
  }
  const X509* issuer = ca_certificate.get();
  add_extension(certificate.get(), issuer, NID_basic_constraints, "critical,CA:FALSE");
  add_extension(certificate.get(), issuer, NID_key_usage, "critical,digitalSignature,keyEncipherment");
  add_extension(certificate.get(), issuer, NID_ext_key_usage,
                request.role == CertificateRole::kNode ? "serverAuth,clientAuth" : "clientAuth");
  add_extension(certificate.get(), issuer, NID_subject_key_identifier, "hash");
  add_extension(certificate.get(), issuer, NID_authority_key_identifier, "keyid:always");
  add_extension(certificate.get(), issuer, NID_subject_alt_name, subject_alt_names(request));
  sign(certificate.get(), ca_key.get());
  return {to_pem(certificate.get()), to_pem(key.get())};
}

std::optional<CertificateSubject> certificate_subject(const std::string& certificate_pem) {
  const Certificate certificate = parse_certificate(certificate_pem);
  if (!certificate) return std::nullopt;
  const X509_NAME* subject = X509_get_subject_name(certificate.get());
  const auto field = [&](int nid) -> std::optional<std::string> {
    const int index = X509_NAME_get_index_by_NID(subject, nid, -1);
    if (index < 0) return std::nullopt;
    const ASN1_STRING* data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, index));
    return std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(data)),
                       static_cast<std::size_t>(ASN1_STRING_length(data)));
  };
  CertificateSubject out;
  out.common_name = field(NID_commonName).value_or("");
  const std::string unit = field(NID_organizationalUnitName).value_or("");
  for (const CertificateRole role : {CertificateRole::kNode, CertificateRole::kUser, CertificateRole::kAdmin}) {
    if (unit == organizational_unit(role)) out.role = role;
  }
  return out;
}

}  // namespace fabric::launcher
