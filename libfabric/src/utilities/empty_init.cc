#include "utilities/empty_init.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/library.h>

namespace fabric::utilities {
namespace {

// An in-place random fill that leaves `self` as it is: pops the arguments, returns self.
void keep_self(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  const auto arguments = op.schema().arguments().size();
  c10::IValue self = (*stack)[stack->size() - arguments];
  torch::jit::drop(*stack, arguments);
  torch::jit::push(*stack, std::move(self));
}

}  // namespace

// Every other operator falls through DeferredInit to its usual kernel.
TORCH_LIBRARY_IMPL(_, DeferredInit, m) { m.fallback(torch::CppFunction::makeFallthrough()); }

// The random fills torch::nn::init and the modules' reset_parameters() are made of.
TORCH_LIBRARY_IMPL(aten, DeferredInit, m) {
  for (const char* op : {"uniform_", "normal_", "bernoulli_.float", "bernoulli_.Tensor", "random_", "random_.from",
                         "random_.to", "exponential_", "log_normal_", "cauchy_", "geometric_"}) {
    m.impl(op, torch::CppFunction::makeFromBoxedFunction<&keep_self>());
  }
}

Scope skip_random_initialization() {
  const bool was_included = c10::impl::tls_is_dispatch_key_included(c10::DispatchKey::DeferredInit);
  c10::impl::tls_set_dispatch_key_included(c10::DispatchKey::DeferredInit, true);
  return Scope([was_included] { c10::impl::tls_set_dispatch_key_included(c10::DispatchKey::DeferredInit, was_included); });
}

}  // namespace fabric::utilities
