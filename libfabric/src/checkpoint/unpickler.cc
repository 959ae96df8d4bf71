#include "checkpoint/unpickler.h"

#include <ATen/core/Dict.h>
#include <ATen/core/List.h>
#include <ATen/core/ivalue.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <optional>
#include <unordered_map>
#include <vector>

#include "fabric/errors.h"

namespace fabric::checkpoint {
namespace {

// What a stack slot holds: a value or a MARK.
struct Item {
  enum class Kind { kValue, kMark } kind = Kind::kValue;
  torch::IValue value;
};

// A global (a class or function named "module.name") travels as a string with this prefix,
// so that it can sit inside tuples like any value (persistent ids hold storage classes).
constexpr std::string_view kGlobalPrefix = "\x01global:";

bool is_global(const torch::IValue& value) {
  return value.isString() && value.toStringRef().rfind(kGlobalPrefix, 0) == 0;
}
std::string global_name(const torch::IValue& value) { return value.toStringRef().substr(kGlobalPrefix.size()); }

const std::map<std::string, torch::ScalarType>& storage_dtypes() {
  static const std::map<std::string, torch::ScalarType> dtypes = {
      {"torch.FloatStorage", torch::kFloat32},     {"torch.DoubleStorage", torch::kFloat64},
      {"torch.HalfStorage", torch::kFloat16},      {"torch.BFloat16Storage", torch::kBFloat16},
      {"torch.LongStorage", torch::kInt64},        {"torch.IntStorage", torch::kInt32},
      {"torch.ShortStorage", torch::kInt16},       {"torch.CharStorage", torch::kInt8},
      {"torch.ByteStorage", torch::kUInt8},        {"torch.BoolStorage", torch::kBool},
      {"torch.ComplexFloatStorage", torch::kComplexFloat}, {"torch.ComplexDoubleStorage", torch::kComplexDouble},
  };
  return dtypes;
}

class Unpickler {
 public:
  Unpickler(std::string_view data, const StorageLoader& load_storage, const std::string& source)
      : data_(data), load_storage_(load_storage), source_(source) {}

  torch::IValue run() {
    while (true) {
      const auto opcode = static_cast<unsigned char>(next_byte());
      if (opcode == '.') break;  // STOP
      execute(opcode);
    }
    if (stack_.size() != 1 || stack_.back().kind != Item::Kind::kValue) fail("the pickle does not end in one value");
    return stack_.back().value;
  }

 private:
  [[noreturn]] void fail(const std::string& why) const {
    throw CheckpointError("Checkpoint " + source_ + " cannot be read: " + why + " (at byte " + std::to_string(pos_) +
                          " of data.pkl). It is corrupt or was not written by torch.save / fabric.save.");
  }

  char next_byte() {
    if (pos_ >= data_.size()) fail("the pickle ends early");
    return data_[pos_++];
  }
  std::string_view take(std::size_t n) {
    if (n > data_.size() - pos_) fail("the pickle ends early");
    auto bytes = data_.substr(pos_, n);
    pos_ += n;
    return bytes;
  }
  template <typename T>
  T read_le() {
    auto bytes = take(sizeof(T));
    T value{};
    std::memcpy(&value, bytes.data(), sizeof(T));  // x86-64 and aarch64 are little-endian
    return value;
  }
  std::string read_line() {
    const auto end = data_.find('\n', pos_);
    if (end == std::string_view::npos) fail("unterminated line");
    std::string line(data_.substr(pos_, end - pos_));
    pos_ = end + 1;
    return line;
  }

  void push(torch::IValue value) { stack_.push_back({Item::Kind::kValue, std::move(value)}); }
  void push_global(const std::string& name) { push(std::string(kGlobalPrefix) + name); }
  Item pop() {
    if (stack_.empty()) fail("stack underflow");
    Item item = std::move(stack_.back());
    stack_.pop_back();
    return item;
  }
  torch::IValue pop_value() {
    Item item = pop();
    if (item.kind != Item::Kind::kValue) fail("expected a value on the stack");
    return item.value;
  }
  // Everything above the last MARK, which is removed.
  std::vector<Item> pop_to_mark() {
    std::vector<Item> items;
    while (true) {
      if (stack_.empty()) fail("MARK not found");
      Item item = pop();
      if (item.kind == Item::Kind::kMark) break;
      items.push_back(std::move(item));
    }
    std::reverse(items.begin(), items.end());
    return items;
  }
  Item& top() {
    if (stack_.empty()) fail("stack underflow");
    return stack_.back();
  }

  void memoize(std::uint32_t index) { memo_[index] = top(); }

  void set_items(torch::IValue& dict, std::vector<Item>& items) {
    if (!dict.isGenericDict()) fail("SETITEMS on something that is not a dict");
    if (items.size() % 2 != 0) fail("odd number of dict items");
    auto generic = dict.toGenericDict();
    for (std::size_t i = 0; i < items.size(); i += 2) {
      if (items[i].kind != Item::Kind::kValue || items[i + 1].kind != Item::Kind::kValue) fail("bad dict item");
      generic.insert_or_assign(items[i].value, items[i + 1].value);
    }
  }

  static torch::IValue empty_dict() { return c10::impl::GenericDict(c10::AnyType::get(), c10::AnyType::get()); }

  std::vector<std::int64_t> int_tuple(const torch::IValue& value) {
    if (!value.isTuple()) fail("expected a tuple of sizes or strides");
    std::vector<std::int64_t> ints;
    for (const auto& element : value.toTupleRef().elements()) ints.push_back(element.toInt());
    return ints;
  }

  // ('storage', <storage class>, key, location, numel) -> a flat tensor over the storage,
  // loaded once per key so that tensors sharing a storage keep sharing it.
  torch::IValue load_persistent(const torch::IValue& pid) {
    if (!pid.isTuple()) fail("unknown persistent id");
    // A vector copy: indexing TupleElements directly trips a GCC -Warray-bounds false positive.
    const std::vector<torch::IValue> fields = pid.toTupleRef().elements().vec();
    if (fields.size() < 5) fail("unknown persistent id");
    if (!fields[0].isString() || fields[0].toStringRef() != "storage" || !is_global(fields[1])) {
      fail("unknown persistent id");
    }
    const std::string key = fields[2].toStringRef();
    if (auto cached = storages_.find(key); cached != storages_.end()) return cached->second;
    const auto dtype = storage_dtypes().find(global_name(fields[1]));
    if (dtype == storage_dtypes().end()) fail("unsupported storage type " + global_name(fields[1]));
    const auto num_bytes = static_cast<std::size_t>(fields[4].toInt()) * c10::elementSize(dtype->second);
    torch::Tensor flat = torch::empty({0}, torch::TensorOptions().dtype(dtype->second));
    flat.set_(load_storage_(key, num_bytes));
    return storages_.emplace(key, flat).first->second;
  }

  torch::IValue call(const std::string& global, const torch::IValue& args) {
    if (!args.isTuple()) fail("call of " + global + " without an argument tuple");
    const std::vector<torch::IValue> a = args.toTupleRef().elements().vec();
    if (global == "collections.OrderedDict" || global == "builtins.dict") return empty_dict();
    if (global == "torch._utils._rebuild_tensor_v2" || global == "torch._utils._rebuild_tensor") {
      if (a.size() < 4 || !a[0].isTensor()) fail("malformed tensor");
      const torch::Tensor& storage_view = a[0].toTensor();
      torch::Tensor tensor = torch::empty({0}, storage_view.options());
      tensor.set_(storage_view.storage(), a[1].toInt(), int_tuple(a[2]), int_tuple(a[3]));
      return tensor;
    }
    if (global == "torch._utils._rebuild_parameter" || global == "torch._utils._rebuild_parameter_with_state") {
      if (a.empty() || !a[0].isTensor()) fail("malformed parameter");
      return a[0];
    }
    fail("it holds a Python object of type " + global + ", which only Python can rebuild");
  }

  void execute(unsigned char opcode) {
    switch (opcode) {
      case 0x80: take(1); break;                                    // PROTO
      case 0x95: take(8); break;                                    // FRAME
      case '(': stack_.push_back({Item::Kind::kMark, {}}); break;   // MARK
      case 'N': push(torch::IValue()); break;                        // NONE
      case 0x88: push(true); break;                                  // NEWTRUE
      case 0x89: push(false); break;                                 // NEWFALSE
      case 'K': push(static_cast<std::int64_t>(read_le<std::uint8_t>())); break;   // BININT1
      case 'M': push(static_cast<std::int64_t>(read_le<std::uint16_t>())); break;  // BININT2
      case 'J': push(static_cast<std::int64_t>(read_le<std::int32_t>())); break;   // BININT
      case 0x8a: {                                                   // LONG1
        const auto n = read_le<std::uint8_t>();
        if (n > 8) fail("integer wider than 64 bits");
        auto bytes = take(n);
        std::int64_t value = 0;
        std::memcpy(&value, bytes.data(), n);
        if (n > 0 && n < 8 && (bytes[n - 1] & 0x80)) value |= ~std::int64_t{0} << (8 * n);  // sign-extend
        push(value);
        break;
      }
      case 'G': {                                                    // BINFLOAT, big-endian
        auto bytes = take(8);
        std::uint64_t bits = 0;
        for (char byte : bytes) bits = (bits << 8) | static_cast<unsigned char>(byte);
        double value;
        std::memcpy(&value, &bits, 8);
        push(value);
        break;
      }
      case 'X': push(std::string(take(read_le<std::uint32_t>()))); break;        // BINUNICODE
      case 0x8c: push(std::string(take(read_le<std::uint8_t>()))); break;        // SHORT_BINUNICODE
      case 0x8d: push(std::string(take(read_le<std::uint64_t>()))); break;       // BINUNICODE8
      case 'T': case 'B': push(std::string(take(read_le<std::uint32_t>()))); break;  // BINSTRING, BINBYTES
      case 'U': case 'C': push(std::string(take(read_le<std::uint8_t>()))); break;   // SHORT_BINSTRING/BYTES
      case ')': push(c10::ivalue::Tuple::create({})); break;         // EMPTY_TUPLE
      case 0x85: case 0x86: case 0x87: {                             // TUPLE1..3
        std::vector<torch::IValue> elements(opcode - 0x84);
        for (auto it = elements.rbegin(); it != elements.rend(); ++it) *it = pop_value();
        push(c10::ivalue::Tuple::create(std::move(elements)));
        break;
      }
      case 't': {                                                    // TUPLE
        std::vector<torch::IValue> elements;
        for (auto& item : pop_to_mark()) elements.push_back(item.value);
        push(c10::ivalue::Tuple::create(std::move(elements)));
        break;
      }
      case '}': push(empty_dict()); break;                           // EMPTY_DICT
      case ']': push(c10::impl::GenericList(c10::AnyType::get())); break;  // EMPTY_LIST
      case 's': {                                                    // SETITEM
        Item value = pop(), key = pop();
        std::vector<Item> items{key, value};
        set_items(top().value, items);
        break;
      }
      case 'u': {                                                    // SETITEMS
        auto items = pop_to_mark();
        set_items(top().value, items);
        break;
      }
      case 'a': {                                                    // APPEND
        torch::IValue value = pop_value();
        if (!top().value.isList()) fail("APPEND to something that is not a list");
        top().value.toList().push_back(value);
        break;
      }
      case 'e': {                                                    // APPENDS
        auto items = pop_to_mark();
        if (!top().value.isList()) fail("APPENDS to something that is not a list");
        auto list = top().value.toList();
        for (auto& item : items) list.push_back(item.value);
        break;
      }
      case 'q': memoize(read_le<std::uint8_t>()); break;             // BINPUT
      case 'r': memoize(read_le<std::uint32_t>()); break;            // LONG_BINPUT
      case 0x94: memoize(static_cast<std::uint32_t>(memo_.size())); break;  // MEMOIZE
      case 'h': case 'j': {                                          // BINGET, LONG_BINGET
        const std::uint32_t index = opcode == 'h' ? read_le<std::uint8_t>() : read_le<std::uint32_t>();
        auto it = memo_.find(index);
        if (it == memo_.end()) fail("reference to an unknown memo entry");
        stack_.push_back(it->second);
        break;
      }
      case 'c': {                                                    // GLOBAL
        std::string module = read_line();
        push_global(module + "." + read_line());
        break;
      }
      case 0x93: {                                                   // STACK_GLOBAL
        std::string name = pop_value().toStringRef();
        std::string module = pop_value().toStringRef();
        push_global(module + "." + name);
        break;
      }
      case 'R': case 0x81: {                                         // REDUCE, NEWOBJ
        torch::IValue args = pop_value();
        torch::IValue callable = pop_value();
        if (!is_global(callable)) fail("call of something that is not a class or function");
        push(call(global_name(callable), args));
        break;
      }
      case 'b': {                                                    // BUILD
        pop();  // the state: OrderedDict's _metadata, a tensor's python attributes
        if (top().kind != Item::Kind::kValue || is_global(top().value)) fail("BUILD on a class");
        break;
      }
      case 'Q': {                                                    // BINPERSID
        torch::IValue pid = pop_value();
        push(load_persistent(pid));
        break;
      }
      default:
        fail("unsupported pickle opcode 0x" + to_hex(opcode));
    }
  }

  static std::string to_hex(unsigned char byte) {
    const char* digits = "0123456789abcdef";
    return {digits[byte >> 4], digits[byte & 15]};
  }

  std::string_view data_;
  std::size_t pos_ = 0;
  const StorageLoader& load_storage_;
  std::string source_;
  std::vector<Item> stack_;
  std::unordered_map<std::uint32_t, Item> memo_;
  std::unordered_map<std::string, torch::IValue> storages_;
};

}  // namespace

torch::IValue unpickle(std::string_view pickle, const StorageLoader& load_storage, const std::string& source) {
  return Unpickler(pickle, load_storage, source).run();
}

}  // namespace fabric::checkpoint
