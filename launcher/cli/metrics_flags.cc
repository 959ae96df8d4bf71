#include "cli/metrics_flags.h"

#include <iostream>

namespace fabric::launcher::cli {

void add_metrics_flag(CLI::App& command, std::string& listen) {
  command.add_option("--metrics-listen", listen,
                     "serve Prometheus metrics at http://HOST:PORT/metrics (and /healthz; on serve and run also "
                     "the status page at /), plain HTTP (port 0: any free one); off by default");
}

std::unique_ptr<MetricsServer> start_metrics_server(const std::string& listen, MetricsRegistry& registry,
                                                    const std::string& who,
                                                    std::map<std::string, HttpHandler> routes) {
  if (listen.empty()) return nullptr;
  const bool page = routes.contains("/");
  auto server = std::make_unique<MetricsServer>(listen, registry, std::move(routes));
  std::cerr << who << ": metrics on http://" << server->address() << "/metrics" << std::endl;
  if (page) std::cerr << who << ": status page on http://" << server->address() << "/" << std::endl;
  return server;
}

}  // namespace fabric::launcher::cli
