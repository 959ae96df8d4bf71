#include "checkpoint/checkpoint_file.h"

#include <ATen/Parallel.h>
#include <c10/core/CPUAllocator.h>
#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/jit/serialization/export.h>
#include <torch/csrc/jit/serialization/pickler.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <system_error>
#include <memory>
#include <tuple>
#include <thread>
#include <vector>

#include "checkpoint/atomic_file.h"
#include "checkpoint/crc32.h"
#include "checkpoint/unpickler.h"
#include "checkpoint/zip_directory.h"
#include "fabric/errors.h"

namespace fabric::checkpoint {
namespace {

std::vector<char> pickle(const torch::IValue& value, std::vector<torch::Tensor>& tensors) {
  std::vector<char> bytes;
  // tag_aggregates=false: no torch.jit type tags, which torch.load(weights_only=True) refuses.
  torch::jit::Pickler pickler([&](const char* data, std::size_t size) { bytes.insert(bytes.end(), data, data + size); },
                              /*tensor_table=*/nullptr, /*type_renamer=*/nullptr, /*memoized_class_types=*/nullptr,
                              /*get_tensor_id=*/nullptr, /*tag_aggregates=*/false);
  pickler.protocol();
  pickler.pushIValue(value);
  pickler.stop();
  tensors = pickler.tensorData();
  return bytes;
}

// Reads the records of one archive, checking each against the CRC-32 of the zip directory.
// Stored records (all that torch.save and fabric.save write) are read straight into their
// storage, a piece at a time, each piece checksummed while it is still in cache, large
// records on as many threads as the intra-op budget; anything else goes through LibTorch's
// reader.
class VerifiedReader {
 public:
  explicit VerifiedReader(const std::string& path) : path_(path), zip_(path) {
    for (const auto& [name, entry] : zip_.entries()) {
      const auto slash = name.find('/');
      if (slash != std::string::npos && name.substr(slash + 1) == "data.pkl") prefix_ = name.substr(0, slash + 1);
    }
  }

  std::tuple<at::DataPtr, std::size_t> record(const std::string& name) {
    const auto found = zip_.entries().find(prefix_ + name);
    if (found == zip_.entries().end()) corrupt("it has no record " + name);
    const ZipEntry& entry = found->second;
    if (entry.method != 0 || entry.compressed_size != entry.size) return through_torch(name, entry);
    const std::uint64_t offset = zip_.data_offset(entry);
    zip_.require_within(offset, entry.size);  // before allocating what a corrupt size asks for
    at::DataPtr data = c10::GetCPUAllocator()->allocate(entry.size);
    if (read_checksummed(offset, entry.size, static_cast<unsigned char*>(data.get())) != entry.crc) {
      corrupt("record " + name + " does not match its checksum");
    }
    return {std::move(data), entry.size};
  }

  [[noreturn]] void corrupt(const std::string& why) const {
    throw CheckpointError("Checkpoint " + path_ + " is corrupt: " + why +
                          ". Load an earlier checkpoint or save this one again.");
  }

 private:
  // Reads `size` bytes at `offset` into `into` and returns their CRC-32: in 1 MiB pieces,
  // each checksummed while still in cache, on up to at::get_num_threads() threads started
  // for the record, one per 8 MiB (at::parallel_for would not do: its OpenMP pragma needs
  // -fopenmp in this translation unit, without which it runs serially).
  std::uint32_t read_checksummed(std::uint64_t offset, std::uint64_t size, unsigned char* into) const {
    constexpr std::uint64_t kPiece = 1 << 20;
    const std::size_t pieces = static_cast<std::size_t>((size + kPiece - 1) / kPiece);
    const auto length_of = [&](std::size_t piece) { return std::min(kPiece, size - piece * kPiece); };
    std::vector<std::uint32_t> crcs(pieces);
    std::atomic<std::size_t> next{0};
    const auto work = [&] {
      for (std::size_t piece; (piece = next.fetch_add(1)) < pieces;) {
        zip_.read(offset + piece * kPiece, length_of(piece), into + piece * kPiece);
        crcs[piece] = crc32(0, into + piece * kPiece, length_of(piece));
      }
    };
    const std::size_t helpers = std::min<std::size_t>(static_cast<std::size_t>(at::get_num_threads()), pieces / 8);
    std::vector<std::exception_ptr> errors(helpers > 0 ? helpers - 1 : 0);
    std::vector<std::thread> threads;
    for (std::size_t i = 0; i + 1 < helpers; ++i) {
      try {
        threads.emplace_back([&, i] {
          try {
            work();
          } catch (...) {
            errors[i] = std::current_exception();
            next = pieces;  // the others stop too
          }
        });
      } catch (const std::system_error&) {
        break;  // no thread to be had: fewer read the record
      }
    }
    try {
      work();
    } catch (...) {
      next = pieces;
      for (auto& thread : threads) thread.join();
      throw;
    }
    for (auto& thread : threads) thread.join();
    for (const auto& error : errors) {
      if (error) std::rethrow_exception(error);
    }
    std::uint32_t crc = 0;
    for (std::size_t piece = 0; piece < pieces; ++piece) crc = crc32_combine(crc, crcs[piece], length_of(piece));
    return crc;
  }

  // A compressed record (an archive rewritten by some other zip tool): LibTorch inflates it.
  std::tuple<at::DataPtr, std::size_t> through_torch(const std::string& name, const ZipEntry& entry) {
    try {
      if (!torch_reader_) torch_reader_ = std::make_unique<caffe2::serialize::PyTorchStreamReader>(path_);
      auto [data, size] = torch_reader_->getRecord(name);
      if (crc32(0, data.get(), size) != entry.crc) corrupt("record " + name + " does not match its checksum");
      return {std::move(data), size};
    } catch (const c10::Error& error) {
      corrupt("LibTorch cannot read record " + name + ": " + error.what_without_backtrace());
    }
  }

  std::string path_;
  ZipArchive zip_;
  std::string prefix_;
  std::unique_ptr<caffe2::serialize::PyTorchStreamReader> torch_reader_;
};

}  // namespace

void write_checkpoint(const std::string& path, const torch::IValue& value) {
  std::vector<torch::Tensor> tensors;
  const std::vector<char> bytes = pickle(value, tensors);
  write_file_atomically(path, [&](const ByteSink& sink) {
    try {
      caffe2::serialize::PyTorchStreamWriter writer(
          [&](const void* data, std::size_t size) -> std::size_t { return sink(data, size) ? size : 0; });
      torch::jit::writeArchiveAndTensors("data", bytes.data(), bytes.size(), tensors, writer);
      writer.writeEndOfFile();
    } catch (const c10::Error& error) {
      throw CheckpointError("Cannot write checkpoint " + path + ": " + error.what_without_backtrace());
    }
  });
}

torch::IValue read_checkpoint(const std::string& path) {
  VerifiedReader reader(path);
  auto [pickle_data, pickle_size] = reader.record("data.pkl");
  const std::string_view pickle(static_cast<const char*>(pickle_data.get()), pickle_size);
  return unpickle(
      pickle,
      [&](const std::string& key, std::size_t num_bytes) {
        auto [data, size] = reader.record("data/" + key);
        if (size < num_bytes) reader.corrupt("storage " + key + " is shorter than its tensors need");
        return c10::Storage(c10::Storage::use_byte_size_t(), size, std::move(data), /*allocator=*/nullptr,
                            /*resizable=*/false);
      },
      path);
}

}  // namespace fabric::checkpoint
