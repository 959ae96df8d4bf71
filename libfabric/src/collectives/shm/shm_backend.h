// The shared-memory c10d::Backend for CPU tensors: all_reduce, broadcast, all_gather (and its
// flat form) and barrier through a NodeGroup (node_group.h) of the ranks on this node; every
// other operation, and tensors it does not carry (non-contiguous, sparse, several per call,
// other dtypes or reductions), through the Gloo backend of the whole group it wraps.
//
// On one node ("shm") the node group is the whole group. Across nodes ("shm+gloo") it is
// hierarchical: all_reduce reduces within each node, then between the nodes' leaders over
// a second Gloo group of leaders only, then broadcasts within each node; broadcast and
// barrier go the same three ways; all_gather is the whole group's Gloo. A leader whose Gloo
// step fails marks its node group broken, so its node fails at once too; the other nodes
// hear of a failure when the failed rank's process ends (its connections close) or at the
// timeout.
//
// Whether a call goes to shared memory or to Gloo depends on the call's tensors and options,
// so every rank must make the same call (as with any c10d backend), and every rank must
// see the same FABRIC_SHARED_MEMORY (fabricd gives every rank of a job the same environment).
//
// Because it is a c10d::Backend, DDP's c10d::Reducer reduces its buckets through it
// unchanged. Operations run in the calling thread and return completed work.
#pragma once

#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <chrono>
#include <functional>
#include <memory>

#include "collectives/shm/node_map.h"

namespace fabric::collectives {

namespace shm {
class NodeGroup;
}

// Makes the network backend (Gloo) of a group of `size` ranks meeting through `store`.
using NetworkFactory =
    std::function<c10::intrusive_ptr<c10d::Backend>(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size)>;

class SharedMemoryBackend final : public c10d::Backend {
 public:
  // Joins the ranks through `store` (every rank calls this). `network` is the whole group's
  // Gloo; `make_network` makes the leaders' group when the ranks span nodes. nullptr on
  // every rank when no node holds two of them, or a node that does cannot share memory.
  static c10::intrusive_ptr<SharedMemoryBackend> create(const c10::intrusive_ptr<c10d::Store>& store, int rank,
                                                        int size, std::chrono::milliseconds timeout,
                                                        c10::intrusive_ptr<c10d::Backend> network,
                                                        const NetworkFactory& make_network);
  // `local` is null where this rank is alone on its node, `leaders` where it leads none.
  SharedMemoryBackend(int rank, shm::NodeMap map, std::unique_ptr<shm::NodeGroup> local,
                      c10::intrusive_ptr<c10d::Backend> leaders, c10::intrusive_ptr<c10d::Backend> network);
  ~SharedMemoryBackend() override;

  const std::string getBackendName() const override { return spans_nodes() ? "shm+gloo" : "shm"; }

  c10::intrusive_ptr<c10d::Work> allreduce(std::vector<at::Tensor>& tensors,
                                           const c10d::AllreduceOptions& options) override;
  c10::intrusive_ptr<c10d::Work> broadcast(std::vector<at::Tensor>& tensors,
                                           const c10d::BroadcastOptions& options) override;
  c10::intrusive_ptr<c10d::Work> allgather(std::vector<std::vector<at::Tensor>>& outputs,
                                           std::vector<at::Tensor>& inputs,
                                           const c10d::AllgatherOptions& options) override;
  c10::intrusive_ptr<c10d::Work> _allgather_base(at::Tensor& output, at::Tensor& input,
                                                 const c10d::AllgatherOptions& options) override;
  c10::intrusive_ptr<c10d::Work> barrier(const c10d::BarrierOptions& options) override;

  // The rest is Gloo's.
  c10::intrusive_ptr<c10d::Work> allreduce_coalesced(std::vector<at::Tensor>& tensors,
                                                     const c10d::AllreduceCoalescedOptions& options) override;
  c10::intrusive_ptr<c10d::Work> reduce(std::vector<at::Tensor>& tensors, const c10d::ReduceOptions& options) override;
  c10::intrusive_ptr<c10d::Work> allgather_coalesced(std::vector<std::vector<at::Tensor>>& outputs,
                                                     std::vector<at::Tensor>& inputs,
                                                     const c10d::AllgatherOptions& options) override;
  c10::intrusive_ptr<c10d::Work> gather(std::vector<std::vector<at::Tensor>>& outputs, std::vector<at::Tensor>& inputs,
                                        const c10d::GatherOptions& options) override;
  c10::intrusive_ptr<c10d::Work> scatter(std::vector<at::Tensor>& outputs, std::vector<std::vector<at::Tensor>>& inputs,
                                         const c10d::ScatterOptions& options) override;
  c10::intrusive_ptr<c10d::Work> reduce_scatter(std::vector<at::Tensor>& outputs,
                                                std::vector<std::vector<at::Tensor>>& inputs,
                                                const c10d::ReduceScatterOptions& options) override;
  c10::intrusive_ptr<c10d::Work> _reduce_scatter_base(at::Tensor& output, at::Tensor& input,
                                                      const c10d::ReduceScatterOptions& options) override;
  c10::intrusive_ptr<c10d::Work> alltoall_base(at::Tensor& output, at::Tensor& input,
                                               std::vector<int64_t>& output_split_sizes,
                                               std::vector<int64_t>& input_split_sizes,
                                               const c10d::AllToAllOptions& options) override;
  c10::intrusive_ptr<c10d::Work> alltoall(std::vector<at::Tensor>& outputs, std::vector<at::Tensor>& inputs,
                                          const c10d::AllToAllOptions& options) override;
  c10::intrusive_ptr<c10d::Work> send(std::vector<at::Tensor>& tensors, int dst_rank, int tag) override;
  c10::intrusive_ptr<c10d::Work> recv(std::vector<at::Tensor>& tensors, int src_rank, int tag) override;
  c10::intrusive_ptr<c10d::Work> recvAnysource(std::vector<at::Tensor>& tensors, int tag) override;

 private:
  bool spans_nodes() const { return map_.nodes() > 1; }
  // Runs one of the leaders' Gloo operations to completion; if it fails, this node's group
  // fails too, so the ranks waiting on their leader hear of it now.
  void between_leaders(const std::function<c10::intrusive_ptr<c10d::Work>()>& operation);

  shm::NodeMap map_;
  int node_;                                   // this rank's node in map_
  std::unique_ptr<shm::NodeGroup> local_;      // this node's ranks
  c10::intrusive_ptr<c10d::Backend> leaders_;  // Gloo between the nodes' leaders
  c10::intrusive_ptr<c10d::Backend> network_;  // Gloo of the whole group
};

}  // namespace fabric::collectives
