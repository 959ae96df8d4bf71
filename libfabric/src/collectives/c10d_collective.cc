#include "collectives/c10d_collective.h"

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "environments/launcher_services.h"
#include "fabric/errors.h"

namespace fabric::collectives {

C10dCollective::C10dCollective(const ClusterEnvironment& environment, CollectiveOptions options, C10dBackendSpec spec)
    : spec_(std::move(spec)),
      rank_(environment.global_rank()),
      world_size_(environment.world_size()),
      timeout_(options.timeout),
      backend_name_(spec_.name) {
  guarded("rendezvous", [&] {
    c10::intrusive_ptr<c10d::Store> store = connect_store(environment);
    backend_ = spec_.create(store, rank_, world_size_, timeout_);
    backend_name_ = backend_->getBackendName();
    // A spec may hand back a backend of ours (shared memory over Gloo): c10d calls that custom.
    const auto backend_type = backend_name_ == spec_.name ? spec_.backend_type : c10d::ProcessGroup::BackendType::CUSTOM;
    process_group_ = c10::make_intrusive<c10d::ProcessGroup>(store, rank_, world_size_);
    process_group_->setBackend(spec_.device_type, backend_type, backend_);
    process_group_->setDefaultBackend(backend_type);
  });
}

c10::intrusive_ptr<c10d::Store> C10dCollective::connect_store(const ClusterEnvironment& environment) const {
  // Under fabricd the launcher is the store, fenced by restart generation; elsewhere rank
  // zero serves a TCPStore at the environment's main address, as torchrun programs do.
  if (auto* launcher = environment.launcher()) return launcher->store(timeout_);
  c10d::TCPStoreOptions store_options;
  store_options.port = static_cast<std::uint16_t>(environment.main_port());
  // torchrun's agent may already serve the store at MASTER_PORT (it says so with
  // TORCHELASTIC_USE_AGENT_STORE=True, as torch.distributed's _create_c10d_store reads it):
  // then every rank is a client. That store outlives a restart, so each attempt's keys get
  // their own prefix: a restarted Gloo group must not find the dead ranks' addresses.
  const char* agent_store = std::getenv("TORCHELASTIC_USE_AGENT_STORE");
  const bool agent_serves = agent_store != nullptr && std::string(agent_store) == "True";
  store_options.isServer = rank_ == 0 && !agent_serves;
  store_options.numWorkers = world_size_;
  store_options.timeout = timeout_;
  auto store = c10::make_intrusive<c10d::TCPStore>(environment.main_address(), store_options);
  if (!agent_serves) return store;
  const char* attempt = std::getenv("TORCHELASTIC_RESTART_COUNT");
  return c10::make_intrusive<c10d::PrefixStore>("/worker/attempt_" + std::string(attempt ? attempt : "0"), store);
}

void C10dCollective::barrier() {
  guarded("barrier", [&] {
    c10d::BarrierOptions options;
    options.device_ids = spec_.barrier_device_ids;
    options.timeout = timeout_;
    backend_->barrier(options)->wait(timeout_);
  });
}

void C10dCollective::broadcast(torch::Tensor& tensor, int src) {
  guarded("broadcast", [&] {
    std::vector<torch::Tensor> tensors{tensor};
    c10d::BroadcastOptions options;
    options.rootRank = src;
    options.timeout = timeout_;
    backend_->broadcast(tensors, options)->wait(timeout_);
  });
}

void C10dCollective::all_reduce(torch::Tensor& tensor, ReduceOp op) {
  guarded("all_reduce", [&] {
    std::vector<torch::Tensor> tensors{tensor};
    c10d::AllreduceOptions options;
    options.timeout = timeout_;
    // Mean is a sum, then a division (truncating for integers, like Lightning's Gloo path).
    options.reduceOp = op == ReduceOp::kMax   ? c10d::ReduceOp::MAX
                       : op == ReduceOp::kMin ? c10d::ReduceOp::MIN
                                              : c10d::ReduceOp::SUM;
    backend_->allreduce(tensors, options)->wait(timeout_);
    if (op == ReduceOp::kMean) {
      if (tensor.is_floating_point() || tensor.is_complex()) {
        tensor.div_(world_size_);
      } else {
        tensor.copy_(tensor.div(world_size_, "trunc"));
      }
    }
  });
}

std::vector<torch::Tensor> C10dCollective::all_gather(const torch::Tensor& tensor) {
  std::vector<torch::Tensor> result;
  guarded("all_gather", [&] {
    // Sizes first, then tensors padded along dimension 0 to the largest, then trimmed.
    torch::Tensor input = tensor.dim() == 0 ? tensor.unsqueeze(0) : tensor.contiguous();
    torch::Tensor size = torch::tensor({input.size(0)}, torch::kInt64).to(input.device());
    auto sizes = gather(size);
    std::int64_t largest = 0;
    for (const auto& s : sizes) largest = std::max(largest, s.item<std::int64_t>());
    auto padded_shape = input.sizes().vec();
    padded_shape[0] = largest;
    torch::Tensor padded = torch::zeros(padded_shape, input.options());
    padded.narrow(0, 0, input.size(0)).copy_(input);
    auto gathered = gather(padded);
    for (std::size_t r = 0; r < gathered.size(); ++r) {
      torch::Tensor piece = gathered[r].narrow(0, 0, sizes[r].item<std::int64_t>());
      result.push_back(tensor.dim() == 0 ? piece.squeeze(0) : piece);
    }
  });
  return result;
}

std::vector<torch::Tensor> C10dCollective::gather(const torch::Tensor& tensor) {
  std::vector<std::vector<torch::Tensor>> outputs(1);
  for (int r = 0; r < world_size_; ++r) outputs[0].push_back(torch::empty_like(tensor));
  std::vector<torch::Tensor> inputs{tensor};
  c10d::AllgatherOptions options;
  options.timeout = timeout_;
  backend_->allgather(outputs, inputs, options)->wait(timeout_);
  return outputs[0];
}

// Runs a collective; any failure becomes a CollectiveError that says which and where.
void C10dCollective::guarded(const char* operation, const std::function<void()>& action) {
  try {
    action();
  } catch (const CollectiveError&) {
    throw;
  } catch (const std::exception& error) {
    std::string what = error.what();
    if (const auto* c10_error = dynamic_cast<const c10::Error*>(&error)) what = c10_error->what_without_backtrace();
    throw CollectiveError(std::string(operation) + " failed on rank " + std::to_string(rank_) + " of " +
                          std::to_string(world_size_) + " (" + backend_name_ + ", timeout " + std::to_string(timeout_.count()) +
                          " ms): " + what + ". A peer rank exited or stopped responding; its own log says why.");
  }
}

}  // namespace fabric::collectives
