#include "security/credentials.h"

#include <arpa/inet.h>
#include <grpcpp/support/client_interceptor.h>

#include <fstream>
#include <iostream>
#include <sstream>
#include <vector>

namespace fabric::launcher {

namespace {

// Adds the bearer token to every call of a channel, TLS or not: gRPC's own call
// credentials refuse to travel over plain text, and `--insecure` on loopback still
// authenticates with tokens.
class BearerTokenInterceptor final : public grpc::experimental::Interceptor {
 public:
  BearerTokenInterceptor(grpc::experimental::ClientRpcInfo*, std::string header) : header_(std::move(header)) {}
  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(grpc::experimental::InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->emplace("authorization", header_);
    }
    methods->Proceed();
  }

 private:
  std::string header_;
};

class BearerTokenFactory final : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit BearerTokenFactory(const std::string& token) : header_("Bearer " + token) {}
  grpc::experimental::Interceptor* CreateClientInterceptor(grpc::experimental::ClientRpcInfo* info) override {
    return new BearerTokenInterceptor(info, header_);
  }

 private:
  std::string header_;
};

std::string host_of(const std::string& listen) {
  std::string host = listen.substr(0, listen.rfind(':'));
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  return host;
}

}  // namespace

std::string read_credential_file(const std::string& flag, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw CredentialsError(flag + " " + path + ": cannot read the file");
  std::ostringstream text;
  text << in.rdbuf();
  if (text.str().empty()) throw CredentialsError(flag + " " + path + ": the file is empty");
  return text.str();
}

bool is_loopback_listen(const std::string& listen) {
  const std::string host = host_of(listen);
  if (host == "localhost" || host == "::1") return true;
  // An IPv4 address in 127.0.0.0/8; not any name that merely starts with "127." (such as
  // 127.example.com, which may resolve anywhere).
  in_addr address{};
  return inet_pton(AF_INET, host.c_str(), &address) == 1 && (ntohl(address.s_addr) >> 24) == 127;
}

std::shared_ptr<grpc::ServerCredentials> server_credentials(const TransportSecurity& security, const std::string& who,
                                                            const std::string& listen) {
  const TlsFiles& tls = security.tls;
  if (security.insecure) {
    if (tls.any()) throw CredentialsError(who + ": --insecure and --tls-* contradict each other; pass one");
    if (!is_loopback_listen(listen)) {
      throw CredentialsError(who + ": without TLS, fabricd listens on loopback only, not on " + listen +
                             "; pass --tls-cert, --tls-key and --tls-ca (make them with `fabricd certs`), or listen "
                             "on 127.0.0.1");
    }
    std::cerr << who << ": WARNING: --insecure: plain text on " << listen
              << "; nodes are not authenticated and nothing on the wire is encrypted" << std::endl;
    return grpc::InsecureServerCredentials();
  }
  if (tls.certificate.empty() || tls.private_key.empty() || tls.ca.empty()) {
    throw CredentialsError(who +
                           ": pass --tls-cert, --tls-key and --tls-ca (make them with `fabricd certs init` and "
                           "`fabricd certs issue`), or --insecure for plain text on loopback");
  }
  grpc::SslServerCredentialsOptions options(GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY);
  options.pem_root_certs = read_credential_file("--tls-ca", tls.ca);
  options.pem_key_cert_pairs.push_back(
      {read_credential_file("--tls-key", tls.private_key), read_credential_file("--tls-cert", tls.certificate)});
  return grpc::SslServerCredentials(options);
}

void apply_server_limits(grpc::ServerBuilder& builder, const ServerLimits& limits) {
  builder.SetMaxReceiveMessageSize(limits.max_message_bytes);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, limits.max_streams_per_connection);
  grpc::ResourceQuota quota("fabricd");
  quota.SetMaxThreads(limits.max_threads);
  builder.SetResourceQuota(quota);
}

std::shared_ptr<grpc::ServerCredentials> rank_facing_credentials(const TransportSecurity& security) {
  if (security.insecure) return nullptr;
  grpc::SslServerCredentialsOptions options(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  options.pem_key_cert_pairs.push_back({read_credential_file("--tls-key", security.tls.private_key),
                                        read_credential_file("--tls-cert", security.tls.certificate)});
  return grpc::SslServerCredentials(options);
}

std::shared_ptr<grpc::Channel> secure_channel(const std::string& target, const TransportSecurity& security,
                                              const std::string& token, const grpc::ChannelArguments& arguments) {
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  if (security.insecure) {
    credentials = grpc::InsecureChannelCredentials();
  } else {
    const TlsFiles& tls = security.tls;
    if (tls.ca.empty()) {
      throw CredentialsError("pass --tls-ca (the cluster CA, to verify " + target +
                             "), or --insecure for plain text on loopback");
    }
    if (tls.certificate.empty() != tls.private_key.empty()) {
      throw CredentialsError("--tls-cert and --tls-key go together; pass both or neither");
    }
    grpc::SslCredentialsOptions options;
    options.pem_root_certs = read_credential_file("--tls-ca", tls.ca);
    if (!tls.certificate.empty()) {
      options.pem_cert_chain = read_credential_file("--tls-cert", tls.certificate);
      options.pem_private_key = read_credential_file("--tls-key", tls.private_key);
    }
    credentials = grpc::SslCredentials(options);
  }
  std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> interceptors;
  if (!token.empty()) interceptors.push_back(std::make_unique<BearerTokenFactory>(token));
  return grpc::experimental::CreateCustomChannelWithInterceptors(target, credentials, arguments,
                                                                 std::move(interceptors));
}

}  // namespace fabric::launcher
