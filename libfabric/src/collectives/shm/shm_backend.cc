#include "collectives/shm/shm_backend.h"

#include <ATen/core/ivalue.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>

#include <optional>

#include "collectives/shm/node_group.h"

namespace fabric::collectives {
namespace {

class StoreRendezvous final : public shm::Rendezvous {
 public:
  explicit StoreRendezvous(c10::intrusive_ptr<c10d::Store> store) : store_(std::move(store)) {}
  void set(const std::string& key, const std::string& value) override { store_->set(key, value); }
  std::string get(const std::string& key) override {
    const std::vector<std::uint8_t> value = store_->get(key);
    return {value.begin(), value.end()};
  }

 private:
  c10::intrusive_ptr<c10d::Store> store_;
};

std::optional<shm::DataType> data_type(const at::Tensor& tensor) {
  switch (tensor.scalar_type()) {
    case at::kFloat: return shm::DataType::kFloat32;
    case at::kDouble: return shm::DataType::kFloat64;
    case at::kBFloat16: return shm::DataType::kBFloat16;
    case at::kHalf: return shm::DataType::kFloat16;
    case at::kChar: return shm::DataType::kInt8;
    case at::kByte: return shm::DataType::kUInt8;
    case at::kInt: return shm::DataType::kInt32;
    case at::kLong: return shm::DataType::kInt64;
    default: return std::nullopt;
  }
}

std::optional<shm::Reduction> reduction(const c10d::ReduceOp& op) {
  switch (op.op_) {
    case c10d::ReduceOp::SUM: return shm::Reduction::kSum;
    case c10d::ReduceOp::PRODUCT: return shm::Reduction::kProduct;
    case c10d::ReduceOp::MIN: return shm::Reduction::kMin;
    case c10d::ReduceOp::MAX: return shm::Reduction::kMax;
    default: return std::nullopt;  // AVG, the bitwise ones, PREMUL_SUM: Gloo's
  }
}

// A dense, contiguous CPU tensor: plain bytes we can copy.
bool plain(const at::Tensor& tensor) {
  return tensor.device().is_cpu() && tensor.layout() == at::kStrided && tensor.is_contiguous();
}

bool plain_list(const std::vector<at::Tensor>& tensors, const at::Tensor& like, std::size_t count) {
  if (tensors.size() != count) return false;
  for (const auto& tensor : tensors) {
    if (!plain(tensor) || tensor.nbytes() != like.nbytes() || tensor.scalar_type() != like.scalar_type()) return false;
  }
  return true;
}

// Work that finished before it was returned (the operations run in the calling thread),
// with its outputs as the future's value, the form c10d::Reducer reads a bucket from.
class CompletedWork final : public c10d::Work {
 public:
  explicit CompletedWork(std::vector<at::Tensor> outputs)
      : outputs_(std::move(outputs)),
        future_(c10::make_intrusive<c10::ivalue::Future>(c10::ListType::create(c10::TensorType::get()))) {
    future_->markCompleted(c10::IValue(outputs_));
  }
  bool isCompleted() override { return true; }
  bool isSuccess() const override { return true; }
  bool wait(std::chrono::milliseconds /*timeout*/) override { return true; }
  std::vector<at::Tensor> result() override { return outputs_; }
  c10::intrusive_ptr<c10::ivalue::Future> getFuture() override { return future_; }

 private:
  std::vector<at::Tensor> outputs_;
  c10::intrusive_ptr<c10::ivalue::Future> future_;
};

c10::intrusive_ptr<c10d::Work> completed(std::vector<at::Tensor> outputs) {
  return c10::make_intrusive<CompletedWork>(std::move(outputs));
}

template <typename Operation>
void run(Operation&& operation) {
  try {
    operation();
  } catch (const shm::NodeGroupError& error) {
    C10_THROW_ERROR(DistBackendError, error.what());
  }
}

}  // namespace

c10::intrusive_ptr<SharedMemoryBackend> SharedMemoryBackend::create(const c10::intrusive_ptr<c10d::Store>& store,
                                                                    int rank, int size,
                                                                    std::chrono::milliseconds timeout,
                                                                    c10::intrusive_ptr<c10d::Backend> network,
                                                                    const NetworkFactory& make_network) {
  // The keys, all under fabric-shm/: identity/<rank> (node_map), formed/<rank> (below),
  // node-<n>/... (each node's NodeGroup::join: segment, mapped/) and leaders/...
  // (the leaders' Gloo group).
  const auto ours = c10::make_intrusive<c10d::PrefixStore>("fabric-shm", store);
  StoreRendezvous rendezvous(ours);
  shm::NodeMap map = shm::NodeMap::exchange(rendezvous, rank, size, shm::node_identity());
  if (map.every_rank_alone()) return {};

  const int node = map.node_of[static_cast<std::size_t>(rank)];
  std::unique_ptr<shm::NodeGroup> local;
  if (map.local_size(rank) > 1) {
    StoreRendezvous on_node(c10::make_intrusive<c10d::PrefixStore>("node-" + std::to_string(node), ours));
    local = shm::NodeGroup::join(on_node, map.local_rank(rank), map.local_size(rank),
                                 {.timeout = timeout, .rank_names = map.ranks_on[static_cast<std::size_t>(node)]});
  }
  // Every rank must take the same path: shared memory only if every node that needs a
  // group has one.
  rendezvous.set("formed/" + std::to_string(rank), local || map.local_size(rank) == 1 ? "yes" : "no");
  for (int r = 0; r < size; ++r) {
    if (rendezvous.get("formed/" + std::to_string(r)) != "yes") return {};
  }

  c10::intrusive_ptr<c10d::Backend> leaders;
  if (map.nodes() > 1 && map.leader(node) == rank) {
    leaders = make_network(c10::make_intrusive<c10d::PrefixStore>("leaders", ours), node, map.nodes());
  }
  return c10::make_intrusive<SharedMemoryBackend>(rank, std::move(map), std::move(local), std::move(leaders),
                                                  std::move(network));
}

SharedMemoryBackend::SharedMemoryBackend(int rank, shm::NodeMap map, std::unique_ptr<shm::NodeGroup> local,
                                         c10::intrusive_ptr<c10d::Backend> leaders,
                                         c10::intrusive_ptr<c10d::Backend> network)
    : c10d::Backend(rank, static_cast<int>(map.node_of.size())),
      map_(std::move(map)),
      node_(map_.node_of[static_cast<std::size_t>(rank)]),
      local_(std::move(local)),
      leaders_(std::move(leaders)),
      network_(std::move(network)) {}

SharedMemoryBackend::~SharedMemoryBackend() = default;

void SharedMemoryBackend::between_leaders(const std::function<c10::intrusive_ptr<c10d::Work>()>& operation) {
  if (!leaders_) return;
  try {
    operation()->wait();
  } catch (...) {
    if (local_) local_->abandon();
    throw;
  }
}

c10::intrusive_ptr<c10d::Work> SharedMemoryBackend::allreduce(std::vector<at::Tensor>& tensors,
                                                              const c10d::AllreduceOptions& options) {
  const auto type = tensors.size() == 1 ? data_type(tensors[0]) : std::nullopt;
  const auto op = reduction(options.reduceOp);
  if (!type || !op || !plain(tensors[0])) return network_->allreduce(tensors, options);
  at::Tensor& tensor = tensors[0];
  run([&] {
    if (local_) local_->all_reduce(tensor.data_ptr(), static_cast<std::size_t>(tensor.numel()), *type, *op);
    between_leaders([&] { return leaders_->allreduce(tensors, options); });
    if (local_ && spans_nodes()) local_->broadcast(tensor.data_ptr(), tensor.nbytes(), 0);
  });
  return completed(tensors);
}

c10::intrusive_ptr<c10d::Work> SharedMemoryBackend::broadcast(std::vector<at::Tensor>& tensors,
                                                              const c10d::BroadcastOptions& options) {
  if (tensors.size() != 1 || !plain(tensors[0]) || options.rootTensor != 0 || options.rootRank < 0 ||
      options.rootRank >= getSize()) {
    return network_->broadcast(tensors, options);  // Gloo names a bad root
  }
  at::Tensor& tensor = tensors[0];
  const int root = static_cast<int>(options.rootRank);
  const int root_node = map_.node_of[static_cast<std::size_t>(root)];
  run([&] {
    // To the root's leader, from it to the other leaders, from each of them to its node.
    if (local_ && node_ == root_node) local_->broadcast(tensor.data_ptr(), tensor.nbytes(), map_.local_rank(root));
    between_leaders([&] {
      c10d::BroadcastOptions between = options;
      between.rootRank = root_node;
      return leaders_->broadcast(tensors, between);
    });
    if (local_ && node_ != root_node) local_->broadcast(tensor.data_ptr(), tensor.nbytes(), 0);
  });
  return completed(tensors);
}

c10::intrusive_ptr<c10d::Work> SharedMemoryBackend::allgather(std::vector<std::vector<at::Tensor>>& outputs,
                                                              std::vector<at::Tensor>& inputs,
                                                              const c10d::AllgatherOptions& options) {
  if (spans_nodes() || inputs.size() != 1 || outputs.size() != 1 || !plain(inputs[0]) ||
      !plain_list(outputs[0], inputs[0], static_cast<std::size_t>(getSize()))) {
    return network_->allgather(outputs, inputs, options);
  }
  std::vector<void*> targets;
  for (auto& output : outputs[0]) targets.push_back(output.data_ptr());
  run([&] { local_->all_gather(inputs[0].data_ptr(), inputs[0].nbytes(), targets); });
  return completed(outputs[0]);
}

c10::intrusive_ptr<c10d::Work> SharedMemoryBackend::_allgather_base(at::Tensor& output, at::Tensor& input,
                                                                    const c10d::AllgatherOptions& options) {
  if (spans_nodes() || !plain(input) || !plain(output) || output.scalar_type() != input.scalar_type() ||
      output.nbytes() != input.nbytes() * static_cast<std::size_t>(getSize())) {
    return network_->_allgather_base(output, input, options);
  }
  std::vector<void*> targets;
  for (int r = 0; r < getSize(); ++r) targets.push_back(static_cast<std::byte*>(output.data_ptr()) + r * input.nbytes());
  run([&] { local_->all_gather(input.data_ptr(), input.nbytes(), targets); });
  return completed({output});
}

c10::intrusive_ptr<c10d::Work> SharedMemoryBackend::barrier(const c10d::BarrierOptions& options) {
  run([&] {
    if (local_) local_->barrier();
    between_leaders([&] { return leaders_->barrier(options); });
    if (local_ && spans_nodes()) local_->barrier();  // no rank leaves before every node arrived
  });
  return completed({});
}

// --- Gloo's -------------------------------------------------------------------------------

c10::intrusive_ptr<c10d::Work> SharedMemoryBackend::allreduce_coalesced(
    std::vector<at::Tensor>& tensors, const c10d::AllreduceCoalescedOptions& options) {
  return network_->allreduce_coalesced(tensors, options);
}
c10::intrusive_ptr<c10d::Work> SharedMemoryBackend::reduce(std::vector<at::Tensor>& tensors,
                                                           const c10d::ReduceOptions& options) {
  return network_->reduce(tensors, options);
}
c10::intrusive_ptr<c10d::Work> SharedMemoryBackend::allgather_coalesced(std::vector<std::vector<at::Tensor>>& outputs,
                                                                        std::vector<at::Tensor>& inputs,
                                                                        const c10d::AllgatherOptions& options) {
  return network_->allgather_coalesced(outputs, inputs, options);
}
c10::intrusive_ptr<c10d::Work> SharedMemoryBackend::gather(std::vector<std::vector<at::Tensor>>& outputs,
                                                           std::vector<at::Tensor>& inputs,
                                                           const c10d::GatherOptions& options) {
  return network_->gather(outputs, inputs, options);
}
c10::intrusive_ptr<c10d::Work> SharedMemoryBackend::scatter(std::vector<at::Tensor>& outputs,
                                                            std::vector<std::vector<at::Tensor>>& inputs,
                                                            const c10d::ScatterOptions& options) {
  return network_->scatter(outputs, inputs, options);
}
c10::intrusive_ptr<c10d::Work> SharedMemoryBackend::reduce_scatter(std::vector<at::Tensor>& outputs,
                                                                   std::vector<std::vector<at::Tensor>>& inputs,
                                                                   const c10d::ReduceScatterOptions& options) {
  return network_->reduce_scatter(outputs, inputs, options);
}
c10::intrusive_ptr<c10d::Work> SharedMemoryBackend::_reduce_scatter_base(at::Tensor& output, at::Tensor& input,
                                                                         const c10d::ReduceScatterOptions& options) {
  return network_->_reduce_scatter_base(output, input, options);
}
c10::intrusive_ptr<c10d::Work> SharedMemoryBackend::alltoall_base(at::Tensor& output, at::Tensor& input,
                                                                  std::vector<int64_t>& output_split_sizes,
                                                                  std::vector<int64_t>& input_split_sizes,
                                                                  const c10d::AllToAllOptions& options) {
  return network_->alltoall_base(output, input, output_split_sizes, input_split_sizes, options);
}
c10::intrusive_ptr<c10d::Work> SharedMemoryBackend::alltoall(std::vector<at::Tensor>& outputs,
                                                             std::vector<at::Tensor>& inputs,
                                                             const c10d::AllToAllOptions& options) {
  return network_->alltoall(outputs, inputs, options);
}
c10::intrusive_ptr<c10d::Work> SharedMemoryBackend::send(std::vector<at::Tensor>& tensors, int dst_rank, int tag) {
  return network_->send(tensors, dst_rank, tag);
}
c10::intrusive_ptr<c10d::Work> SharedMemoryBackend::recv(std::vector<at::Tensor>& tensors, int src_rank, int tag) {
  return network_->recv(tensors, src_rank, tag);
}
c10::intrusive_ptr<c10d::Work> SharedMemoryBackend::recvAnysource(std::vector<at::Tensor>& tensors, int tag) {
  return network_->recvAnysource(tensors, tag);
}

}  // namespace fabric::collectives
