// Reads the pickle (data.pkl) of a torch.save / fabric.save archive into a torch::IValue.
// LibTorch's own unpickler turns collections.OrderedDict into None, so Python's
// torch.save(model.state_dict()) cannot be read with it; this one understands what
// torch.save writes (pickle protocols 2-5): dicts and OrderedDicts (with _metadata), lists,
// tuples, numbers, strings, bytes, None and tensors (_rebuild_tensor_v2, _rebuild_parameter)
// over storages that are loaded on demand. Anything else is refused with a CheckpointError.
#pragma once

#include <torch/types.h>

#include <functional>
#include <string>
#include <string_view>

namespace fabric::checkpoint {

// Returns the bytes of storage `key` (the archive record data/<key>) as a storage.
using StorageLoader = std::function<c10::Storage(const std::string& key, std::size_t num_bytes)>;

// `source` names the file in error messages.
torch::IValue unpickle(std::string_view pickle, const StorageLoader& load_storage, const std::string& source);

}  // namespace fabric::checkpoint
