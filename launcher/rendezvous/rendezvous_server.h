// RendezvousServer: a RendezvousServiceImpl served on a port of its own, for as long as the
// object lives. `fabricd run` listens on a loopback port it picks, in plain text; a node
// agent on the address its peers reach it at, with TLS when it has a certificate (ranks
// verify it with the CA in FABRICD_TLS_CA). Either way every call must carry its job's
// secret. The destructor wakes blocked calls before shutting the server down, so it never
// waits on a Get with no timeout.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>

#include "observability/introspection.h"
#include "observability/rpc_metrics.h"
#include "rendezvous/rendezvous_service.h"
#include "security/credentials.h"

namespace fabric::launcher {

struct RendezvousServerOptions {
  std::string listen = "127.0.0.1:0";  // host:port; port 0 picks a free one
  std::string advertise_host;           // the host the ranks dial (the listening host when empty)
  // See RendezvousServiceImpl: how long a request of a job not begun yet waits for it.
  std::chrono::milliseconds await_unstarted{0};
  // TLS for the ranks' connections; plain text when null (loopback only: fabricd run).
  std::shared_ptr<grpc::ServerCredentials> credentials;
  RendezvousLimits limits;
  ServerLimits server_limits;
  // Counts and times every call (grpc_server_* families) when set; must outlive the server.
  MetricsRegistry* metrics = nullptr;
};

class RendezvousServer {
 public:
  explicit RendezvousServer(RendezvousServerOptions options = {})
      : service_(options.await_unstarted, options.limits) {
    enable_server_introspection();
    grpc::ServerBuilder builder;
    builder.AddListeningPort(options.listen,
                             options.credentials ? options.credentials : grpc::InsecureServerCredentials(), &port_);
    apply_server_limits(builder, options.server_limits);
    if (options.metrics) add_rpc_metrics(builder, *options.metrics);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    if (!server_ || port_ == 0) throw std::runtime_error("cannot listen on " + options.listen + " for the rendezvous");
    report_serving(*server_, {"fabric.v1.RendezvousService"});
    const std::string host = options.listen.substr(0, options.listen.rfind(':'));
    advertise_host_ = !options.advertise_host.empty()              ? std::move(options.advertise_host)
                      : host == "0.0.0.0" || host == "[::]" ? std::string("127.0.0.1")
                                                             : host;
  }
  ~RendezvousServer() {
    report_shutting_down(*server_);
    service_.shutdown();  // wakes blocked calls first, so Shutdown does not wait on them
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  }
  RendezvousServer(const RendezvousServer&) = delete;
  RendezvousServer& operator=(const RendezvousServer&) = delete;

  RendezvousServiceImpl& service() { return service_; }
  int port() const { return port_; }
  // host:port as the ranks dial it.
  std::string endpoint() const { return advertise_host_ + ":" + std::to_string(port_); }

 private:
  RendezvousServiceImpl service_;
  int port_ = 0;
  std::string advertise_host_;
  std::unique_ptr<grpc::Server> server_;
};

}  // namespace fabric::launcher
