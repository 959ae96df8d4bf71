#include "observability/introspection.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>

#include <mutex>

namespace fabric::launcher {

void enable_server_introspection() {
  static std::once_flag once;
  std::call_once(once, [] {
    grpc::EnableDefaultHealthCheckService(true);
    grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  });
}

void report_serving(grpc::Server& server, const std::vector<std::string>& services) {
  grpc::HealthCheckServiceInterface* health = server.GetHealthCheckService();
  if (!health) return;  // built before enable_server_introspection()
  for (const std::string& service : services) health->SetServingStatus(service, true);
}

void report_shutting_down(grpc::Server& server) {
  if (grpc::HealthCheckServiceInterface* health = server.GetHealthCheckService()) health->Shutdown();
}

}  // namespace fabric::launcher
