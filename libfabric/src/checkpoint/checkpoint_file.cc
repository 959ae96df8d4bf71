#include "checkpoint/checkpoint_file.h"

#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/jit/serialization/export.h>
#include <torch/csrc/jit/serialization/pickler.h>
#include <zlib.h>

#include <map>
#include <memory>
#include <tuple>
#include <vector>

#include "checkpoint/atomic_file.h"
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

// Reads records of one archive, checking each against the CRC-32 of the zip directory.
class VerifiedReader {
 public:
  explicit VerifiedReader(const std::string& path) : path_(path), crcs_(read_zip_crcs(path)) {
    try {
      reader_ = std::make_unique<caffe2::serialize::PyTorchStreamReader>(path);
    } catch (const c10::Error& error) {
      throw CheckpointError("Checkpoint " + path + " is not a readable torch.save/fabric.save archive: " +
                            error.what_without_backtrace());
    }
    for (const auto& [name, crc] : crcs_) {
      const auto slash = name.find('/');
      if (slash != std::string::npos && name.substr(slash + 1) == "data.pkl") prefix_ = name.substr(0, slash + 1);
    }
  }

  std::tuple<at::DataPtr, std::size_t> record(const std::string& name) {
    if (!reader_->hasRecord(name)) corrupt("it has no record " + name);
    auto [data, size] = reader_->getRecord(name);
    auto crc = crcs_.find(prefix_ + name);
    if (crc == crcs_.end()) corrupt("record " + name + " is missing from the zip directory");
    if (crc32_z(0, static_cast<const Bytef*>(data.get()), size) != crc->second) {
      corrupt("record " + name + " does not match its checksum");
    }
    return {std::move(data), size};
  }

  [[noreturn]] void corrupt(const std::string& why) const {
    throw CheckpointError("Checkpoint " + path_ + " is corrupt: " + why +
                          ". Load an earlier checkpoint or save this one again.");
  }

 private:
  std::string path_;
  std::map<std::string, std::uint32_t> crcs_;
  std::string prefix_;
  std::unique_ptr<caffe2::serialize::PyTorchStreamReader> reader_;
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
