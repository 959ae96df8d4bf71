// The NCCL backend for CUDA tensors: LibTorch's c10d::ProcessGroupNCCL (in libtorch_cuda),
// compiled with USE_C10D_NCCL in this translation unit only, and only when LibTorch has CUDA.
#pragma once

#include <memory>

#include "fabric/collective.h"

namespace fabric::collectives {

// `device` is this rank's GPU: NCCL's barrier and communicators run on it.
std::unique_ptr<Collective> make_nccl_collective(const ClusterEnvironment& environment, CollectiveOptions options,
                                                 torch::Device device);

}  // namespace fabric::collectives
