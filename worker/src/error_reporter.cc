#include "fabric/worker/error_reporter.h"

#include <cxxabi.h>
#include <execinfo.h>

#include <cstdlib>
#include <iostream>
#include <mutex>
#include <string>
#include <typeinfo>

namespace fabric::worker {
namespace {

std::string demangle(const char* name) {
  int status = 0;
  std::unique_ptr<char, decltype(&std::free)> demangled(abi::__cxa_demangle(name, nullptr, nullptr, &status),
                                                        &std::free);
  return status == 0 && demangled ? demangled.get() : name;
}

// "binary(_ZN3foo3barEv+0x1f) [0x...]" => "foo::bar()+0x1f (binary)"
std::string symbolize(const char* frame) {
  const std::string text = frame;
  const auto open = text.find('('), plus = text.find('+', open), close = text.find(')', open);
  if (open == std::string::npos || plus == std::string::npos || close == std::string::npos || plus == open + 1) {
    return text;
  }
  const std::string mangled = text.substr(open + 1, plus - open - 1);
  return demangle(mangled.c_str()) + text.substr(plus, close - plus) + " (" + text.substr(0, open) + ")";
}

std::string current_backtrace() {
  void* frames[64];
  const int count = ::backtrace(frames, 64);
  std::unique_ptr<char*, decltype(&std::free)> symbols(::backtrace_symbols(frames, count), &std::free);
  std::string trace;
  // Skip this function, describe_exception and the terminate handler itself.
  for (int i = 3; symbols && i < count; ++i) trace += symbolize(symbols.get()[i]) + "\n";
  return trace;
}

struct Reporter {
  std::mutex mutex;
  std::shared_ptr<RendezvousClient> client;
  std::function<std::optional<std::int64_t>()> step;
  std::terminate_handler previous = nullptr;
};

Reporter& reporter() {
  static Reporter* instance = new Reporter;  // never destroyed: terminate may run during exit
  return *instance;
}

[[noreturn]] void report_and_terminate() {
  Reporter& self = reporter();
  if (std::exception_ptr error = std::current_exception()) {
    std::shared_ptr<RendezvousClient> client;
    std::function<std::optional<std::int64_t>()> step;
    {
      std::lock_guard lock(self.mutex);
      client = self.client;
      step = self.step;
    }
    try {
      if (client) client->report_error(describe_exception(error, step ? step() : std::nullopt, true));
    } catch (const std::exception& failure) {
      std::cerr << "could not report the error to fabricd: " << failure.what() << std::endl;
    }
  }
  if (self.previous != nullptr) self.previous();
  std::abort();
}

}  // namespace

ErrorReport describe_exception(std::exception_ptr error, std::optional<std::int64_t> step, bool with_backtrace) {
  ErrorReport report{.step = step};
  const std::type_info* type = abi::__cxa_current_exception_type();
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    report.message = e.what();
    type = &typeid(e);
  } catch (...) {
    report.message = "an exception that is not a std::exception";
  }
  report.error_type = type != nullptr ? demangle(type->name()) : "unknown";
  if (with_backtrace) report.stack_trace = current_backtrace();
  return report;
}

void report_uncaught_exceptions(std::shared_ptr<RendezvousClient> client,
                                std::function<std::optional<std::int64_t>()> step) {
  Reporter& self = reporter();
  std::lock_guard lock(self.mutex);
  self.client = std::move(client);
  self.step = std::move(step);
  if (std::get_terminate() != &report_and_terminate) self.previous = std::set_terminate(&report_and_terminate);
}

}  // namespace fabric::worker
