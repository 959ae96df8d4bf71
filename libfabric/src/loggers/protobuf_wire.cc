#include "loggers/protobuf_wire.h"

#include <bit>

namespace fabric::loggers {
namespace {

constexpr int kVarint = 0;
constexpr int kFixed64 = 1;
constexpr int kLengthDelimited = 2;
constexpr int kFixed32 = 5;

}  // namespace

ProtoWriter& ProtoWriter::add_varint(int field, std::uint64_t value) {
  put_tag(field, kVarint);
  put_varint(value);
  return *this;
}

ProtoWriter& ProtoWriter::add_double(int field, double value) {
  put_tag(field, kFixed64);
  put_little_endian(std::bit_cast<std::uint64_t>(value), 8);
  return *this;
}

ProtoWriter& ProtoWriter::add_float(int field, float value) {
  put_tag(field, kFixed32);
  put_little_endian(std::bit_cast<std::uint32_t>(value), 4);
  return *this;
}

ProtoWriter& ProtoWriter::add_bytes(int field, std::string_view value) {
  put_tag(field, kLengthDelimited);
  put_varint(value.size());
  bytes_.append(value);
  return *this;
}

void ProtoWriter::put_tag(int field, int wire_type) {
  put_varint((static_cast<std::uint64_t>(field) << 3) | static_cast<std::uint64_t>(wire_type));
}

void ProtoWriter::put_varint(std::uint64_t value) {
  while (value >= 0x80) {
    bytes_.push_back(static_cast<char>((value & 0x7F) | 0x80));
    value >>= 7;
  }
  bytes_.push_back(static_cast<char>(value));
}

void ProtoWriter::put_little_endian(std::uint64_t value, int size) {
  for (int i = 0; i < size; ++i) bytes_.push_back(static_cast<char>((value >> (8 * i)) & 0xFF));
}

}  // namespace fabric::loggers
