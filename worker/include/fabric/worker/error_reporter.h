// Reporting the exception that ends a rank, so that fabricd's failure summary shows it
// ("rank 2: c10::OutOfMemoryError: CUDA out of memory ... at step 1200") rather than only
// "signal 6" and a stderr tail.
#pragma once

#include <exception>
#include <functional>
#include <memory>
#include <optional>

#include "fabric/worker/rendezvous_client.h"

namespace fabric::worker {

// What an exception says about itself: what(), its demangled type and, when the current
// stack is that of the throw (as it is inside std::terminate for an uncaught exception),
// a demangled backtrace.
ErrorReport describe_exception(std::exception_ptr error, std::optional<std::int64_t> step, bool with_backtrace);

// Installs a std::terminate handler that reports the uncaught exception, if any, through
// `client` (bounded by a short deadline) and then calls the handler it replaced (which
// aborts). `step` is asked for the training step to put in the report. Idempotent: later
// calls replace the client and step source.
void report_uncaught_exceptions(std::shared_ptr<RendezvousClient> client,
                                std::function<std::optional<std::int64_t>()> step);

}  // namespace fabric::worker
