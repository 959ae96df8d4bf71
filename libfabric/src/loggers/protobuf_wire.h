// Protocol-buffer wire encoding by hand, for the handful of TensorBoard messages the
// TensorBoard logger writes (Event, Summary, the HParams plugin's data). Linking a protobuf
// library is not an option here: LibTorch's wheel bundles protobuf headers that clash with
// the system's. Fields are written exactly as called, in order; a caller skips proto3
// defaults itself where it wants to (fields inside a oneof must always be written).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace fabric::loggers {

class ProtoWriter {
 public:
  // int32, int64, uint64, bool and enum fields (wire type 0). Negative values take ten
  // bytes, as protobuf encodes them.
  ProtoWriter& add_varint(int field, std::uint64_t value);
  ProtoWriter& add_int64(int field, std::int64_t value) { return add_varint(field, static_cast<std::uint64_t>(value)); }
  ProtoWriter& add_bool(int field, bool value) { return add_varint(field, value ? 1 : 0); }
  // double (wire type 1, little-endian) and float (wire type 5, little-endian).
  ProtoWriter& add_double(int field, double value);
  ProtoWriter& add_float(int field, float value);
  // string, bytes and embedded messages (wire type 2, length-delimited).
  ProtoWriter& add_bytes(int field, std::string_view value);
  ProtoWriter& add_message(int field, const ProtoWriter& message) { return add_bytes(field, message.bytes()); }

  const std::string& bytes() const { return bytes_; }

 private:
  void put_tag(int field, int wire_type);
  void put_varint(std::uint64_t value);
  void put_little_endian(std::uint64_t value, int size);

  std::string bytes_;
};

}  // namespace fabric::loggers
