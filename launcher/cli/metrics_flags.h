// --metrics-listen, shared by serve, agent and run: Prometheus' /metrics (and /healthz)
// over plain HTTP on an address of its own, and on serve and run the status page (/).
// Off unless given.
#pragma once

#include <CLI/CLI.hpp>

#include <memory>
#include <string>

#include "observability/metrics.h"
#include "observability/metrics_server.h"

namespace fabric::launcher::cli {

void add_metrics_flag(CLI::App& command, std::string& listen);

// The server for `listen` ("" = none), announced on stderr as "<who>: metrics on
// http://host:port/metrics" (and "<who>: status page on http://host:port/" with the status
// page's routes); std::runtime_error when it cannot listen.
std::unique_ptr<MetricsServer> start_metrics_server(const std::string& listen, MetricsRegistry& registry,
                                                    const std::string& who,
                                                    std::map<std::string, HttpHandler> routes = {});

}  // namespace fabric::launcher::cli
