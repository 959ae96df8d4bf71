#include "observability/metrics_server.h"

#include <httplib.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <thread>

namespace fabric::launcher {

struct MetricsServer::Impl {
  httplib::Server http;
  std::thread thread;
  std::atomic<bool> listening_ended{false};
};

MetricsServer::MetricsServer(const std::string& listen, MetricsRegistry& registry,
                             std::map<std::string, HttpHandler> routes)
    : impl_(std::make_unique<Impl>()) {
  const auto colon = listen.rfind(':');
  if (colon == std::string::npos) throw std::runtime_error("--metrics-listen " + listen + ": use host:port");
  std::string host = listen.substr(0, colon);
  if (host.size() > 1 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  int port = 0;
  try {
    port = std::stoi(listen.substr(colon + 1));
  } catch (const std::exception&) {
    port = -1;
  }
  if (port < 0 || port > 65535) throw std::runtime_error("--metrics-listen " + listen + ": the port is not a number");

  // SO_REUSEADDR only: cpp-httplib's default adds SO_REUSEPORT, with which a second process
  // would share a taken port silently instead of being refused.
  impl_->http.set_socket_options([](socket_t socket) {
    const int yes = 1;
    ::setsockopt(socket, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  // Scrapers send small GETs; anything else is cut short.
  impl_->http.set_payload_max_length(64 << 10);
  impl_->http.set_read_timeout(std::chrono::seconds(10));
  impl_->http.set_write_timeout(std::chrono::seconds(10));
  impl_->http.Get("/metrics", [&registry](const httplib::Request&, httplib::Response& response) {
    response.set_content(registry.render(), "text/plain; version=0.0.4; charset=utf-8");
  });
  impl_->http.Get("/healthz", [](const httplib::Request&, httplib::Response& response) {
    response.set_content("ok\n", "text/plain");
  });
  for (auto& [path, handler] : routes) {
    impl_->http.Get(path, [handler = std::move(handler)](const httplib::Request& request, httplib::Response& response) {
                      const HttpReply reply = handler(request.get_header_value("Authorization"));
                      response.status = reply.status;
                      response.set_header("Cache-Control", "no-store");
                      response.set_content(reply.body, reply.content_type);
                    });
  }
  const int bound = port == 0 ? impl_->http.bind_to_any_port(host) : (impl_->http.bind_to_port(host, port) ? port : -1);
  if (bound <= 0) throw std::runtime_error("--metrics-listen " + listen + ": cannot listen there");
  address_ = (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + std::to_string(bound);
  impl_->thread = std::thread([impl = impl_.get()] {
    impl->http.listen_after_bind();
    impl->listening_ended = true;
  });
}

MetricsServer::~MetricsServer() {
  // stop() only stops a server that is already listening: wait for the thread to get there.
  while (!impl_->http.is_running() && !impl_->listening_ended) std::this_thread::yield();
  impl_->http.stop();
  impl_->thread.join();
}

}  // namespace fabric::launcher
