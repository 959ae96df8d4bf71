// The byte-level pieces of the TensorBoard event file: CRC-32C and its TFRecord mask, the
// TFRecord framing and the hand-encoded protobuf messages, against vectors from RFC 3720
// and bytes produced by TensorBoard's own Python code (protobuf and RecordWriter).
#include "loggers/crc32c.h"

#include <gtest/gtest.h>

#include <string>

#include "loggers/event_file_writer.h"
#include "loggers/protobuf_wire.h"
#include "loggers/tensorboard_events.h"

namespace fabric::loggers {
namespace {

std::string to_hex(std::string_view bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string hex;
  for (const char c : bytes) {
    hex.push_back(kDigits[(static_cast<unsigned char>(c) >> 4) & 0xF]);
    hex.push_back(kDigits[static_cast<unsigned char>(c) & 0xF]);
  }
  return hex;
}

TEST(Crc32c, MatchesTheCheckValueAndRfc3720Vectors) {
  EXPECT_EQ(crc32c("123456789"), 0xE3069283u);
  EXPECT_EQ(crc32c(""), 0u);
  EXPECT_EQ(crc32c(std::string(32, '\0')), 0x8A9136AAu);
  EXPECT_EQ(crc32c(std::string(32, '\xFF')), 0x62A8AB43u);
  std::string ascending;
  for (int i = 0; i < 32; ++i) ascending.push_back(static_cast<char>(i));
  EXPECT_EQ(crc32c(ascending), 0x46DD794Eu);
}

TEST(Crc32c, MaskMatchesTensorBoardsMaskedCrc) {
  // tensorboard.compat.tensorflow_stub.pywrap_tensorflow.masked_crc32c
  EXPECT_EQ(masked_crc32c("123456789"), 0xC78AB0E5u);
  EXPECT_EQ(masked_crc32c(""), 0xA282EAD8u);
  EXPECT_EQ(mask_crc(0xE3069283u), 0xC78AB0E5u);
}

TEST(TfRecord, FramesDataLikeTensorBoardsRecordWriter) {
  // tensorboard.summary.writer.record_writer.RecordWriter(buffer).write(b"hello")
  EXPECT_EQ(to_hex(tfrecord("hello")), "0500000000000000eab2043e68656c6c6fbb1f1c19");
}

TEST(ProtoWriter, EncodesVarintsFixedWidthAndLengthDelimitedFields) {
  EXPECT_EQ(to_hex(ProtoWriter().add_varint(1, 150).bytes()), "089601");
  EXPECT_EQ(to_hex(ProtoWriter().add_varint(2, 300).bytes()), "10ac02");
  EXPECT_EQ(to_hex(ProtoWriter().add_int64(2, -1).bytes()), "10ffffffffffffffffff01");
  EXPECT_EQ(to_hex(ProtoWriter().add_bytes(2, "testing").bytes()), "120774657374696e67");
  EXPECT_EQ(to_hex(ProtoWriter().add_float(2, 0.5F).bytes()), "150000003f");
  EXPECT_EQ(to_hex(ProtoWriter().add_double(1, 1.0).bytes()), "09000000000000f03f");
  ProtoWriter inner;
  inner.add_varint(1, 150);
  EXPECT_EQ(to_hex(ProtoWriter().add_message(3, inner).bytes()), "1a03089601");
}

TEST(TensorBoardEvents, ScalarAndFileVersionEventsMatchProtobufsSerialization) {
  // event_pb2.Event(wall_time=1700000000.25, step=7, summary=...value.add(tag="loss", simple_value=0.5))
  EXPECT_EQ(to_hex(events::scalar(1700000000.25, 7, "loss", 0.5F)),
            "0900001040fc54d94110072a0d0a0b0a046c6f7373150000003f");
  // A zero value is still written (simple_value sits in a oneof); a negative step takes ten bytes.
  EXPECT_EQ(to_hex(events::scalar(1700000000.25, -3, "loss", 0.0F)),
            "0900001040fc54d94110fdffffffffffffffff012a0d0a0b0a046c6f73731500000000");
  EXPECT_EQ(to_hex(events::file_version(1700000000.25)), "0900001040fc54d9411a0d627261696e2e4576656e743a32");
}

}  // namespace
}  // namespace fabric::loggers
