// Collectives between the ranks of a job: barrier, broadcast, all_reduce, all_gather, each
// bounded by a timeout so that a peer that died or hangs becomes a CollectiveError naming
// the operation, never a hang. One backend per folder in src/collectives/ over LibTorch's own
// c10d process groups: gloo/ for CPU tensors, nccl/ for CUDA ones. Calls are blocking; every rank must
// make the same calls in the same order. Not thread-safe.
#pragma once

#include <torch/types.h>

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "fabric/environment.h"

namespace fabric {

enum class ReduceOp { kSum, kMean, kMax, kMin };

// "sum", "mean", "max", "min" (Lightning's names); ConfigurationError listing them otherwise.
ReduceOp parse_reduce_op(std::string_view name);

struct CollectiveOptions {
  // How long any one operation, and the initial rendezvous, may take.
  std::chrono::milliseconds timeout = std::chrono::minutes(30);
  // "gloo" or "nccl"; empty: the device's own (gloo for the CPU, nccl for CUDA).
  std::string backend = {};
};

// ConfigurationError unless `backend` ("gloo", "nccl" or empty) can carry tensors on `device`.
void check_collective_backend(const std::string& backend, torch::Device device);

class Collective {
 public:
  virtual ~Collective() = default;

  virtual std::string_view backend() const = 0;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  // Where this backend's tensors live (NCCL: this rank's GPU); helpers build theirs there.
  virtual torch::Device device() const = 0;

  virtual void barrier() = 0;
  // Replaces `tensor` on every rank with rank `src`'s (same shape and dtype everywhere).
  virtual void broadcast(torch::Tensor& tensor, int src) = 0;
  // In place. kMean of an integer tensor truncates, as Lightning's Gloo emulation does.
  virtual void all_reduce(torch::Tensor& tensor, ReduceOp op) = 0;
  // Every rank's tensor, in rank order; dimension 0 may differ between ranks.
  virtual std::vector<torch::Tensor> all_gather(const torch::Tensor& tensor) = 0;

  // Rank `src`'s bytes on every rank (for plain values: strings, numbers, small structs).
  std::string broadcast_bytes(const std::string& bytes, int src);
};

// The backend for tensors on `device` (Gloo for the CPU, NCCL for CUDA, or options.backend
// when it can carry them), connected to the ranks of `environment` through a TCP store at
// its main address and port (rank zero serves it). ConfigurationError for a backend that
// does not exist or cannot carry tensors on `device`.
std::unique_ptr<Collective> make_collective(const ClusterEnvironment& environment, torch::Device device,
                                            CollectiveOptions options = {});

}  // namespace fabric
