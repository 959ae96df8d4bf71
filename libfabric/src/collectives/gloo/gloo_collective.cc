#include "collectives/gloo/gloo_collective.h"

#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <cstdlib>

#include "collectives/process_group.h"
#include "fabric/errors.h"

namespace fabric::collectives {
namespace {

class GlooCollective final : public Collective, public HasProcessGroup {
 public:
  GlooCollective(const ClusterEnvironment& environment, CollectiveOptions options)
      : rank_(environment.global_rank()), world_size_(environment.world_size()), timeout_(options.timeout) {
    guarded("rendezvous", [&] {
      c10d::TCPStoreOptions store_options;
      store_options.port = static_cast<std::uint16_t>(environment.main_port());
      store_options.isServer = rank_ == 0;
      store_options.numWorkers = world_size_;
      store_options.timeout = timeout_;
      auto store = c10::make_intrusive<c10d::TCPStore>(environment.main_address(), store_options);
      auto gloo_options = c10d::ProcessGroupGloo::Options::create();
      gloo_options->timeout = timeout_;
      const char* interface = std::getenv("GLOO_SOCKET_IFNAME");
      gloo_options->devices.push_back(interface ? c10d::ProcessGroupGloo::createDeviceForInterface(interface)
                                                : c10d::ProcessGroupGloo::createDefaultDevice());
      group_ = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank_, world_size_, gloo_options);
      process_group_ = c10::make_intrusive<c10d::ProcessGroup>(store, rank_, world_size_);
      process_group_->setBackend(c10::DeviceType::CPU, c10d::ProcessGroup::BackendType::GLOO, group_);
      process_group_->setDefaultBackend(c10d::ProcessGroup::BackendType::GLOO);
    });
  }

  c10::intrusive_ptr<c10d::ProcessGroup> process_group() override { return process_group_; }

  std::string_view backend() const override { return "gloo"; }
  int rank() const override { return rank_; }
  int world_size() const override { return world_size_; }

  void barrier() override {
    guarded("barrier", [&] { group_->barrier()->wait(timeout_); });
  }

  void broadcast(torch::Tensor& tensor, int src) override {
    guarded("broadcast", [&] {
      std::vector<torch::Tensor> tensors{tensor};
      c10d::BroadcastOptions options;
      options.rootRank = src;
      options.timeout = timeout_;
      group_->broadcast(tensors, options)->wait(timeout_);
    });
  }

  void all_reduce(torch::Tensor& tensor, ReduceOp op) override {
    guarded("all_reduce", [&] {
      std::vector<torch::Tensor> tensors{tensor};
      c10d::AllreduceOptions options;
      options.timeout = timeout_;
      // Gloo has no average: sum, then divide (truncating for integers, like Lightning).
      options.reduceOp = op == ReduceOp::kMax   ? c10d::ReduceOp::MAX
                         : op == ReduceOp::kMin ? c10d::ReduceOp::MIN
                                                : c10d::ReduceOp::SUM;
      group_->allreduce(tensors, options)->wait(timeout_);
      if (op == ReduceOp::kMean) {
        if (tensor.is_floating_point() || tensor.is_complex()) {
          tensor.div_(world_size_);
        } else {
          tensor.copy_(tensor.div(world_size_, "trunc"));
        }
      }
    });
  }

  std::vector<torch::Tensor> all_gather(const torch::Tensor& tensor) override {
    std::vector<torch::Tensor> result;
    guarded("all_gather", [&] {
      // Sizes first, then tensors padded along dimension 0 to the largest, then trimmed.
      torch::Tensor input = tensor.dim() == 0 ? tensor.unsqueeze(0) : tensor.contiguous();
      torch::Tensor size = torch::tensor({input.size(0)}, torch::kInt64);
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

 private:
  std::vector<torch::Tensor> gather(const torch::Tensor& tensor) {
    std::vector<std::vector<torch::Tensor>> outputs(1);
    for (int r = 0; r < world_size_; ++r) outputs[0].push_back(torch::empty_like(tensor));
    std::vector<torch::Tensor> inputs{tensor};
    c10d::AllgatherOptions options;
    options.timeout = timeout_;
    group_->allgather(outputs, inputs, options)->wait(timeout_);
    return outputs[0];
  }

  // Runs a collective; any failure becomes a CollectiveError that says which and where.
  template <typename Action>
  void guarded(const char* operation, Action&& action) {
    try {
      action();
    } catch (const CollectiveError&) {
      throw;
    } catch (const std::exception& error) {
      std::string what = error.what();
      if (const auto* c10_error = dynamic_cast<const c10::Error*>(&error)) what = c10_error->what_without_backtrace();
      throw CollectiveError(std::string(operation) + " failed on rank " + std::to_string(rank_) + " of " +
                            std::to_string(world_size_) + " (gloo, timeout " + std::to_string(timeout_.count()) +
                            " ms): " + what + ". A peer rank exited or stopped responding; its own log says why.");
    }
  }

  int rank_;
  int world_size_;
  std::chrono::milliseconds timeout_;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> group_;
  c10::intrusive_ptr<c10d::ProcessGroup> process_group_;  // the same group, for c10d::Reducer
};

}  // namespace

std::unique_ptr<Collective> make_gloo_collective(const ClusterEnvironment& environment, CollectiveOptions options) {
  return std::make_unique<GlooCollective>(environment, options);
}

}  // namespace fabric::collectives
