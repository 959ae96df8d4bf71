#include "test_server.h"

#include <grpcpp/grpcpp.h>

#include <stdexcept>

#include "rendezvous/rendezvous_service.h"

namespace fabric::testing {

struct TestRendezvousServer::Impl {
  std::string job_id;
  launcher::RendezvousServiceImpl service;
  std::unique_ptr<grpc::Server> server;
  int port = 0;
};

TestRendezvousServer::TestRendezvousServer(const std::string& job_id, int world_size) : impl_(std::make_unique<Impl>()) {
  impl_->job_id = job_id;
  impl_->service.start_job(job_id, world_size,
                           {.rdzv_timeout = std::chrono::seconds(30),
                            .heartbeat_interval = std::chrono::milliseconds(50),
                            .secret = kTestJobSecret});
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &impl_->port);
  builder.RegisterService(&impl_->service);
  impl_->server = builder.BuildAndStart();
  if (!impl_->server) throw std::runtime_error("test server did not start");
}

TestRendezvousServer::~TestRendezvousServer() {
  impl_->service.shutdown();
  impl_->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
}

std::string TestRendezvousServer::endpoint() const { return "127.0.0.1:" + std::to_string(impl_->port); }

void TestRendezvousServer::begin_generation(int generation) { impl_->service.begin_generation(impl_->job_id, generation); }

long long TestRendezvousServer::ms_since_progress(int rank) const {
  const auto beat = impl_->service.last_heartbeat(impl_->job_id, rank);
  if (!beat) return -1;
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - beat->last_progress)
      .count();
}

std::optional<TestRendezvousServer::Reported> TestRendezvousServer::reported(int rank) const {
  const auto beat = impl_->service.last_heartbeat(impl_->job_id, rank);
  if (!beat) return std::nullopt;
  return Reported{.samples = beat->samples,
                  .steps_per_second = beat->steps_per_second,
                  .samples_per_second = beat->samples_per_second,
                  .metrics = beat->metrics};
}

}  // namespace fabric::testing
