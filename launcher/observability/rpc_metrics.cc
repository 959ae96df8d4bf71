#include "observability/rpc_metrics.h"

#include <grpcpp/support/server_interceptor.h>

#include <chrono>
#include <string>
#include <utility>
#include <vector>

namespace fabric::launcher {
namespace {

namespace exp = grpc::experimental;

const char* code_name(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK: return "OK";
    case grpc::StatusCode::CANCELLED: return "CANCELLED";
    case grpc::StatusCode::UNKNOWN: return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND: return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS: return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED: return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED: return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE: return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED: return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL: return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS: return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED: return "UNAUTHENTICATED";
    default: return "UNKNOWN";
  }
}

const char* type_name(exp::ServerRpcInfo::Type type) {
  switch (type) {
    case exp::ServerRpcInfo::Type::UNARY: return "unary";
    case exp::ServerRpcInfo::Type::CLIENT_STREAMING: return "client_stream";
    case exp::ServerRpcInfo::Type::SERVER_STREAMING: return "server_stream";
    case exp::ServerRpcInfo::Type::BIDI_STREAMING: return "bidi_stream";
  }
  return "unknown";
}

struct RpcFamilies {
  explicit RpcFamilies(MetricsRegistry& registry)
      : started(registry.counter("grpc_server_started_total", "RPCs started on the server",
                                 {"grpc_service", "grpc_method", "grpc_type"})),
        handled(registry.counter("grpc_server_handled_total", "RPCs completed on the server, by status code",
                                 {"grpc_service", "grpc_method", "grpc_type", "grpc_code"})),
        seconds(registry.histogram("grpc_server_handling_seconds",
                                   "Time from an RPC's start to its status (a stream's whole life)",
                                   {"grpc_service", "grpc_method", "grpc_type"})) {}
  CounterFamily& started;
  CounterFamily& handled;
  HistogramFamily& seconds;
};

class RpcMetricsInterceptor final : public exp::Interceptor {
 public:
  RpcMetricsInterceptor(exp::ServerRpcInfo* info, RpcFamilies& families) : families_(families) {
    // "/fabric.v1.JobService/SubmitJob"
    const std::string method = info->method() ? info->method() : "";
    const auto slash = method.rfind('/');
    labels_ = {slash == std::string::npos || slash == 0 ? "unknown" : method.substr(1, slash - 1),
               slash == std::string::npos ? method : method.substr(slash + 1), type_name(info->type())};
  }

  void Intercept(exp::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(exp::InterceptionHookPoints::POST_RECV_INITIAL_METADATA)) {
      families_.started.add(labels_);
    }
    if (methods->QueryInterceptionHookPoint(exp::InterceptionHookPoints::PRE_SEND_STATUS)) {
      std::vector<std::string> with_code = labels_;
      with_code.push_back(code_name(methods->GetSendStatus().error_code()));
      families_.handled.add(with_code);
      families_.seconds.observe(
          labels_, std::chrono::duration<double>(std::chrono::steady_clock::now() - started_at_).count());
    }
    methods->Proceed();
  }

 private:
  RpcFamilies& families_;
  std::vector<std::string> labels_;
  const std::chrono::steady_clock::time_point started_at_ = std::chrono::steady_clock::now();
};

class RpcMetricsFactory final : public exp::ServerInterceptorFactoryInterface {
 public:
  explicit RpcMetricsFactory(MetricsRegistry& registry) : families_(registry) {}
  exp::Interceptor* CreateServerInterceptor(exp::ServerRpcInfo* info) override {
    return new RpcMetricsInterceptor(info, families_);  // gRPC owns and deletes it
  }

 private:
  RpcFamilies families_;
};

}  // namespace

void add_rpc_metrics(grpc::ServerBuilder& builder, MetricsRegistry& registry) {
  std::vector<std::unique_ptr<exp::ServerInterceptorFactoryInterface>> creators;
  creators.push_back(std::make_unique<RpcMetricsFactory>(registry));
  builder.experimental().SetInterceptorCreators(std::move(creators));
}

}  // namespace fabric::launcher
