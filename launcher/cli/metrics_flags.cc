#include "cli/metrics_flags.h"

#include <iostream>

namespace fabric::launcher::cli {

void add_metrics_flag(CLI::App& command, std::string& listen) {
  command.add_option("--metrics-listen", listen,
                     "serve Prometheus metrics at http://HOST:PORT/metrics (and /healthz), plain HTTP (port 0: any "
                     "free one); off by default");
}

std::unique_ptr<MetricsServer> start_metrics_server(const std::string& listen, MetricsRegistry& registry,
                                                    const std::string& who) {
  if (listen.empty()) return nullptr;
  auto server = std::make_unique<MetricsServer>(listen, registry);
  std::cerr << who << ": metrics on http://" << server->address() << "/metrics" << std::endl;
  return server;
}

}  // namespace fabric::launcher::cli
