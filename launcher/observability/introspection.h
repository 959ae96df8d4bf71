// Every gRPC server of fabricd answers two standard services besides its own:
//   grpc.health.v1.Health                    load balancers, Kubernetes' gRPC probes,
//                                            grpc_health_probe: "" is the server itself,
//                                            each of its services by full name
//   grpc.reflection.v1alpha.ServerReflection  grpcurl, grpcui, Postman: the services and
//                                            their messages, without the .proto files
// Neither needs a caller's token: they say what a server is and whether it is up, nothing
// about jobs.
#pragma once

#include <grpcpp/grpcpp.h>

#include <string>
#include <vector>

namespace fabric::launcher {

// Turns both on for every server this process builds from now on. Idempotent; must run
// before the ServerBuilder is constructed (reflection plugs into its constructor).
void enable_server_introspection();

// After BuildAndStart: each of `services` (full names, "fabric.v1.JobService") reported
// SERVING. Names never reported are NOT_FOUND to a health check.
void report_serving(grpc::Server& server, const std::vector<std::string>& services);

// Before Shutdown: every service, "" included, NOT_SERVING from now on, so that probes and
// balancers see the server going before its port closes.
void report_shutting_down(grpc::Server& server);

}  // namespace fabric::launcher
