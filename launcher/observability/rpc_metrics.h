// Counts and times every RPC a gRPC server handles, under the names go-grpc-prometheus
// made common (its Grafana dashboards work unchanged):
//   grpc_server_started_total{grpc_service, grpc_method, grpc_type}
//   grpc_server_handled_total{grpc_service, grpc_method, grpc_type, grpc_code}
//   grpc_server_handling_seconds{grpc_service, grpc_method, grpc_type}   (histogram)
// grpc_type is unary, client_stream, server_stream or bidi_stream; grpc_code is the status
// code's name (OK, NOT_FOUND, ...). For a stream, the handling time is the stream's life.
#pragma once

#include <grpcpp/grpcpp.h>

#include "observability/metrics.h"

namespace fabric::launcher {

// Adds the interceptor to `builder` (before BuildAndStart). The registry must outlive the
// server built from it.
void add_rpc_metrics(grpc::ServerBuilder& builder, MetricsRegistry& registry);

}  // namespace fabric::launcher
