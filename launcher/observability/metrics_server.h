// MetricsServer: Prometheus' scrape endpoint over plain HTTP, on an address of its own
// (`--metrics-listen`), for as long as the object lives.
//   GET /metrics   the registry's text exposition
//   GET /healthz   "ok": a liveness check that needs no TLS (Kubernetes httpGet probes)
//   and the GET routes it is given (the status page, status/status_page.h)
// Metrics say how many jobs run and how fast, not what they are: the endpoint is meant for a
// network the operator's Prometheus shares, loopback by default.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "observability/metrics.h"

namespace fabric::launcher {

struct HttpReply {
  int status = 200;
  std::string content_type;
  std::string body;
};
// Answers a GET; `authorization` is the request's Authorization header ("" when none).
using HttpHandler = std::function<HttpReply(const std::string& authorization)>;

class MetricsServer {
 public:
  // Listens on host:port (port 0: a free one); std::runtime_error when it cannot. `routes`
  // are served beside /metrics and /healthz, by path.
  MetricsServer(const std::string& listen, MetricsRegistry& registry, std::map<std::string, HttpHandler> routes = {});
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // host:port it listens on, the port resolved.
  const std::string& address() const { return address_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string address_;
};

}  // namespace fabric::launcher
