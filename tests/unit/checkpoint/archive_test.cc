// The pieces under fabric.load: the CRC-32 against zlib's own, and the zip reader against
// a zip64 archive that Python's zipfile, an independent reader, accepts.
#include <gtest/gtest.h>
#include <zlib.h>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "checkpoint/crc32.h"
#include "checkpoint/zip_directory.h"
#include "support/temp_dir.h"

namespace fabric::checkpoint {
namespace {

std::vector<unsigned char> random_bytes(std::size_t size, unsigned seed) {
  std::mt19937 random(seed);
  std::vector<unsigned char> bytes(size);
  for (auto& byte : bytes) byte = static_cast<unsigned char>(random());
  return bytes;
}

TEST(Crc32, EqualsZlibForEveryLengthAlignmentAndStart) {
  const auto bytes = random_bytes(3 << 20, 1);
  std::vector<std::size_t> lengths;
  for (std::size_t n = 0; n <= 300; ++n) lengths.push_back(n);  // every tail and fold boundary
  for (std::size_t n : {1023, 4096, 65537, 1 << 20, (3 << 20) - 9}) lengths.push_back(n);
  for (const std::size_t length : lengths) {
    for (const std::size_t offset : {0, 1, 5, 8}) {
      for (const std::uint32_t start : {0u, 0xdeadbeefu}) {
        const unsigned char* data = bytes.data() + offset;
        ASSERT_EQ(crc32(start, data, length), static_cast<std::uint32_t>(crc32_z(start, data, length)))
            << "length " << length << ", offset " << offset << ", start " << start;
      }
    }
  }
}

TEST(Crc32, PiecesCombineIntoTheWholesCrc) {
  const auto bytes = random_bytes(5 << 20, 2);
  std::uint32_t combined = 0;
  for (std::size_t at = 0; at < bytes.size(); at += 1 << 20) {
    const std::size_t length = std::min<std::size_t>(1 << 20, bytes.size() - at);
    combined = crc32_combine(combined, crc32(0, bytes.data() + at, length), length);
  }
  EXPECT_EQ(combined, crc32(0, bytes.data(), bytes.size()));
}

// Little-endian fields appended one after another.
struct Bytes {
  std::string data;
  template <typename T>
  Bytes& put(T value) {
    for (std::size_t i = 0; i < sizeof(T); ++i) data.push_back(static_cast<char>((value >> (8 * i)) & 0xff));
    return *this;
  }
  Bytes& put(const std::string& text) {
    data += text;
    return *this;
  }
};

// A stored zip64 archive whose every size and offset is in the zip64 extra fields (all the
// 32-bit ones say 0xFFFFFFFF), as writers do for members past 4 GiB.
std::string zip64_archive(const std::vector<std::pair<std::string, std::string>>& members) {
  Bytes file, directory;
  for (const auto& [name, content] : members) {
    const std::uint64_t offset = file.data.size();
    const auto crc = static_cast<std::uint32_t>(crc32_z(0, reinterpret_cast<const Bytef*>(content.data()), content.size()));
    file.put<std::uint32_t>(0x04034b50).put<std::uint16_t>(45).put<std::uint16_t>(0).put<std::uint16_t>(0)
        .put<std::uint32_t>(0).put(crc).put<std::uint32_t>(0xFFFFFFFF).put<std::uint32_t>(0xFFFFFFFF)
        .put(static_cast<std::uint16_t>(name.size())).put<std::uint16_t>(20).put(name)
        .put<std::uint16_t>(1).put<std::uint16_t>(16).put<std::uint64_t>(content.size()).put<std::uint64_t>(content.size())
        .put(content);
    directory.put<std::uint32_t>(0x02014b50).put<std::uint16_t>(45).put<std::uint16_t>(45).put<std::uint16_t>(0)
        .put<std::uint16_t>(0).put<std::uint32_t>(0).put(crc).put<std::uint32_t>(0xFFFFFFFF).put<std::uint32_t>(0xFFFFFFFF)
        .put(static_cast<std::uint16_t>(name.size())).put<std::uint16_t>(28).put<std::uint16_t>(0).put<std::uint16_t>(0)
        .put<std::uint16_t>(0).put<std::uint32_t>(0).put<std::uint32_t>(0xFFFFFFFF).put(name)
        .put<std::uint16_t>(1).put<std::uint16_t>(24).put<std::uint64_t>(content.size()).put<std::uint64_t>(content.size())
        .put<std::uint64_t>(offset);
  }
  const std::uint64_t directory_offset = file.data.size(), count = members.size();
  file.put(directory.data);
  const std::uint64_t end64 = file.data.size();
  file.put<std::uint32_t>(0x06064b50).put<std::uint64_t>(44).put<std::uint16_t>(45).put<std::uint16_t>(45)
      .put<std::uint32_t>(0).put<std::uint32_t>(0).put(count).put(count)
      .put<std::uint64_t>(directory.data.size()).put(directory_offset);
  file.put<std::uint32_t>(0x07064b50).put<std::uint32_t>(0).put(end64).put<std::uint32_t>(1);
  file.put<std::uint32_t>(0x06054b50).put<std::uint16_t>(0).put<std::uint16_t>(0).put<std::uint16_t>(0xFFFF)
      .put<std::uint16_t>(0xFFFF).put<std::uint32_t>(0xFFFFFFFF).put<std::uint32_t>(0xFFFFFFFF).put<std::uint16_t>(0);
  return file.data;
}

std::string python_reads(const std::string& path) {
  const std::string command = std::string(FABRIC_PYTHON) +
                              " -c \"import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); "
                              "print(';'.join(f'{i.filename}={len(z.read(i))}@{i.header_offset}' for i in z.infolist()))\" " +
                              path;
  std::unique_ptr<FILE, decltype(&pclose)> pipe(popen(command.c_str(), "r"), &pclose);
  char line[4096] = {};
  return fgets(line, sizeof(line), pipe.get()) ? line : "";
}

TEST(ZipArchive, ReadsSizesAndOffsetsFromZip64ExtraFields) {
  testing::ScopedTempDir dir;
  const std::string path = dir / "zip64.zip";
  const std::string first(1000, 'a');
  const std::string second = "the second member";
  std::ofstream(path, std::ios::binary) << zip64_archive({{"archive/data/0", first}, {"archive/data/1", second}});
  // Python's zipfile reads it (checking both CRCs): the archive is well-formed zip64.
  const std::string second_offset = std::to_string(30 + 14 + 20 + first.size());
  EXPECT_EQ(python_reads(path), "archive/data/0=1000@0;archive/data/1=17@" + second_offset + "\n");

  const ZipArchive zip(path);
  ASSERT_EQ(zip.entries().size(), 2u);
  const ZipEntry& entry = zip.entries().at("archive/data/1");
  EXPECT_EQ(entry.size, second.size());
  EXPECT_EQ(entry.compressed_size, second.size());
  EXPECT_EQ(std::to_string(entry.header_offset), second_offset);
  std::string read(entry.size, '\0');
  zip.read(zip.data_offset(entry), entry.size, read.data());
  EXPECT_EQ(read, second);
  EXPECT_EQ(entry.crc, crc32(0, second.data(), second.size()));
}

}  // namespace
}  // namespace fabric::checkpoint
