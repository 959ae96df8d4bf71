// What the service harnesses share: turning fuzzer bytes (FuzzedDataProvider) into the
// strings, numbers and durations of requests, with a bias towards the values that matter
// (empty, negative, huge, the ones in use), and calling a method with bytes that are not a
// message at all, through a GenericStub, as a hostile client would.
//
// The contract every harness checks besides "no crash, no sanitizer report": a handler never
// answers UNKNOWN (an exception escaped it) or INTERNAL to a well-formed request.
#pragma once

#include <fuzzer/FuzzedDataProvider.h>
#include <google/protobuf/duration.pb.h>
#include <google/protobuf/message.h>
#include <google/protobuf/stubs/logging.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <memory>
#include <string>
#include <vector>

namespace fabric::fuzz {

// Text for a proto `string` field: random bytes, mostly folded into ASCII. A string that is
// not UTF-8 makes the whole request unparsable (the server answers INTERNAL before any
// handler runs), so only one in four keeps its raw bytes.
inline std::string random_text(FuzzedDataProvider& in, std::size_t max) {
  std::string text = in.ConsumeRandomLengthString(max);
  if (in.ConsumeIntegralInRange<int>(0, 3) != 0) {
    for (char& c : text) c = static_cast<char>(static_cast<unsigned char>(c) & 0x7f);
  }
  return text;
}

// A string: usually one of `known` (the ids and keys in play), else short random text,
// sometimes a long one.
inline std::string pick_string(FuzzedDataProvider& in, const std::vector<std::string>& known = {},
                               std::size_t max_random = 32) {
  const int how = in.ConsumeIntegralInRange<int>(0, 7);
  if (!known.empty() && how < 5) return known[in.ConsumeIntegralInRange<std::size_t>(0, known.size() - 1)];
  if (how == 7) return std::string(in.ConsumeIntegralInRange<std::size_t>(0, 8192), 'x');
  return random_text(in, max_random);
}

// `text` with every byte mapped into printable ASCII: what a metadata value may hold (the
// client library refuses anything else before it is sent).
inline std::string printable(std::string text) {
  for (char& c : text) c = static_cast<char>(0x20 + (static_cast<unsigned char>(c) % 95));
  return text;
}

// An int32 near the interesting range [lo, hi], or an edge, or anything.
inline std::int32_t pick_int(FuzzedDataProvider& in, std::int32_t lo, std::int32_t hi) {
  switch (in.ConsumeIntegralInRange<int>(0, 7)) {
    case 0: return -1;
    case 1: return std::numeric_limits<std::int32_t>::max();
    case 2: return std::numeric_limits<std::int32_t>::min();
    case 3: return in.ConsumeIntegral<std::int32_t>();
    default: return in.ConsumeIntegralInRange<std::int32_t>(lo, hi);
  }
}

inline std::int64_t pick_int64(FuzzedDataProvider& in) {
  switch (in.ConsumeIntegralInRange<int>(0, 5)) {
    case 0: return std::numeric_limits<std::int64_t>::max();
    case 1: return std::numeric_limits<std::int64_t>::min();
    case 2: return in.ConsumeIntegral<std::int64_t>();
    default: return in.ConsumeIntegralInRange<std::int64_t>(-3, 3);
  }
}

// A Duration: left unset, zero, a few milliseconds, or any (negative, malformed, huge).
inline void pick_duration(FuzzedDataProvider& in, bool& set, google::protobuf::Duration& d) {
  set = false;
  switch (in.ConsumeIntegralInRange<int>(0, 5)) {
    case 0: return;
    case 1: d.set_seconds(0); d.set_nanos(0); break;
    case 2: d.set_seconds(0); d.set_nanos(in.ConsumeIntegralInRange<std::int32_t>(1, 5'000'000)); break;
    case 3: d.set_seconds(in.ConsumeIntegralInRange<std::int64_t>(0, 600)); d.set_nanos(0); break;
    default:
      d.set_seconds(pick_int64(in));
      d.set_nanos(in.ConsumeIntegral<std::int32_t>());
  }
  set = true;
}

// Sets *field from the provider unless it picked "unset".
template <typename SetFn>
void maybe_duration(FuzzedDataProvider& in, SetFn mutable_field) {
  bool set = false;
  google::protobuf::Duration d;
  pick_duration(in, set, d);
  if (set) *mutable_field() = d;
}

// Replaces `message` by whatever a parse of random bytes leaves in it (a failed parse
// leaves a partial message, which is sent anyway: the typed stub serializes what is there).
inline void from_raw_bytes(FuzzedDataProvider& in, google::protobuf::Message& message) {
  const std::string bytes = in.ConsumeRandomLengthString(512);
  message.Clear();
  (void)message.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()));
}

// Protobuf logs every string that is not UTF-8, on both ends; at thousands of calls a second
// that is most of a harness's time. Called once, before the server starts.
inline void quiet_protobuf() { google::protobuf::SetLogHandler(nullptr); }

inline std::chrono::system_clock::time_point in_ms(int ms) {
  return std::chrono::system_clock::now() + std::chrono::milliseconds(ms);
}

// Whether `request` survives the wire: a string field that is not UTF-8 serializes, but
// the server cannot parse it and answers INTERNAL without calling the handler.
inline bool well_formed(const google::protobuf::Message& request) {
  std::unique_ptr<google::protobuf::Message> copy(request.New());
  return copy->ParseFromString(request.SerializeAsString());
}

// The harnesses' one contract check on a typed call's status (INTERNAL is gRPC's own answer
// to a request it cannot parse, so it is allowed for one that is not well-formed).
inline void check_status(const grpc::Status& status, const char* method, const google::protobuf::Message* request = nullptr) {
  const auto code = status.error_code();
  // FUZZ_TRACE=1: every call and its answer, to see what an input does.
  static const bool trace = std::getenv("FUZZ_TRACE") != nullptr;
  if (trace) {
    static const auto start = std::chrono::steady_clock::now();
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
    std::fprintf(stderr, "fuzz: %6lld ms %s -> %d %s\n", static_cast<long long>(ms.count()), method,
                 static_cast<int>(code), status.error_message().substr(0, 120).c_str());
  }
  if (code == grpc::StatusCode::INTERNAL && request != nullptr && !well_formed(*request)) return;
  if (code == grpc::StatusCode::UNKNOWN || code == grpc::StatusCode::INTERNAL ||
      code == grpc::StatusCode::UNIMPLEMENTED || code == grpc::StatusCode::DATA_LOSS) {
    std::fprintf(stderr, "fuzz: %s answered %d: %s\n", method, static_cast<int>(code), status.error_message().c_str());
    std::abort();
  }
}

// Calls `method` ("/fabric.v1.X/Y", or a name that does not exist) with raw bytes as the
// request, waits for its status (reading and dropping any response), and returns it.
inline grpc::Status raw_call(grpc::GenericStub& stub, const std::string& method, const std::string& bytes,
                             int deadline_ms, const std::vector<std::pair<std::string, std::string>>& metadata = {}) {
  grpc::ClientContext context;
  context.set_deadline(in_ms(deadline_ms));
  for (const auto& [key, value] : metadata) context.AddMetadata(key, value);
  grpc::CompletionQueue queue;
  grpc::Slice slice(bytes);
  grpc::ByteBuffer request(&slice, 1);
  auto call = stub.PrepareUnaryCall(&context, method, request, &queue);
  grpc::ByteBuffer response;
  grpc::Status status;
  call->StartCall();
  call->Finish(&response, &status, reinterpret_cast<void*>(1));
  void* tag = nullptr;
  bool ok = false;
  (void)queue.Next(&tag, &ok);
  queue.Shutdown();
  while (queue.Next(&tag, &ok)) {
  }
  return status;
}

}  // namespace fabric::fuzz
