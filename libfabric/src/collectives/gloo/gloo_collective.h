// The Gloo backend for CPU tensors: LibTorch's c10d::ProcessGroupGloo, under the
// shared-memory backend (shm/) when some node holds several ranks and options.backend is
// empty (FABRIC_SHARED_MEMORY=0 turns that off): shared memory within each node, Gloo
// between them. Compiled with
// the gloo headers from Debian's libgloo-dev (the torch wheel ships the library's symbols
// but not its headers) and USE_C10D_GLOO, in this one translation unit only.
#pragma once

#include <memory>

#include "fabric/collective.h"

namespace fabric::collectives {

std::unique_ptr<Collective> make_gloo_collective(const ClusterEnvironment& environment, CollectiveOptions options);

}  // namespace fabric::collectives
