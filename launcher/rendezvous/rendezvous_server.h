// RendezvousServer: a RendezvousServiceImpl served on a port of its own, for as long as the
// object lives. `fabricd run` listens on a loopback port it picks; a node agent on the
// address its peers reach it at. The destructor wakes blocked calls before shutting the
// server down, so it never waits on a Get with no timeout.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>

#include "rendezvous/rendezvous_service.h"

namespace fabric::launcher {

class RendezvousServer {
 public:
  // listen: "host:port"; port 0 picks a free one. advertise_host: the host the ranks are
  // told to dial (the listening host when empty).
  explicit RendezvousServer(const std::string& listen = "127.0.0.1:0", std::string advertise_host = "",
                            std::chrono::milliseconds await_unstarted = std::chrono::milliseconds(0))
      : service_(await_unstarted) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    if (!server_ || port_ == 0) throw std::runtime_error("cannot listen on " + listen + " for the rendezvous");
    const std::string host = listen.substr(0, listen.rfind(':'));
    advertise_host_ = advertise_host.empty() ? (host == "0.0.0.0" || host == "[::]" ? "127.0.0.1" : host)
                                             : std::move(advertise_host);
  }
  ~RendezvousServer() {
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
