#include "collectives/shm/reduce_kernels.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>

namespace fabric::collectives::shm {

std::size_t element_size(DataType type) {
  switch (type) {
    case DataType::kFloat64:
    case DataType::kInt64: return 8;
    case DataType::kFloat32:
    case DataType::kInt32: return 4;
    case DataType::kBFloat16:
    case DataType::kFloat16: return 2;
    case DataType::kInt8:
    case DataType::kUInt8: return 1;
  }
  return 0;
}

std::string_view name(DataType type) {
  switch (type) {
    case DataType::kFloat32: return "float32";
    case DataType::kFloat64: return "float64";
    case DataType::kBFloat16: return "bfloat16";
    case DataType::kFloat16: return "float16";
    case DataType::kInt8: return "int8";
    case DataType::kUInt8: return "uint8";
    case DataType::kInt32: return "int32";
    case DataType::kInt64: return "int64";
  }
  return "?";
}

namespace {

#define FABRIC_INLINE inline __attribute__((always_inline))

// --- 16-bit floats, widened to float and rounded back to nearest even ---------------------

FABRIC_INLINE float bfloat16_to_float(std::uint16_t value) {
  return std::bit_cast<float>(static_cast<std::uint32_t>(value) << 16);
}

FABRIC_INLINE std::uint16_t float_to_bfloat16(float value) {
  const auto bits = std::bit_cast<std::uint32_t>(value);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;  // NaN stays a (quiet) NaN
  const std::uint32_t rounding_bias = 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<std::uint16_t>((bits + rounding_bias) >> 16);
}

// IEEE half <-> float without branches on the value (the classic exponent-rebias method):
// normals and subnormals go through float arithmetic, which does the rounding.
FABRIC_INLINE float float16_to_float(std::uint16_t value) {
  const std::uint32_t word = static_cast<std::uint32_t>(value) << 16;
  const std::uint32_t sign = word & 0x80000000u;
  const std::uint32_t twice = word + word;  // exponent and mantissa, sign shifted out
  const float normal = std::bit_cast<float>((twice >> 4) + (0xe0u << 23)) * 0x1.0p-112f;
  const float subnormal = std::bit_cast<float>((twice >> 17) | (126u << 23)) - 0.5f;
  const std::uint32_t magnitude =
      twice < (1u << 27) ? std::bit_cast<std::uint32_t>(subnormal) : std::bit_cast<std::uint32_t>(normal);
  return std::bit_cast<float>(sign | magnitude);
}

FABRIC_INLINE std::uint16_t float_to_float16(float value) {
  const std::uint32_t word = std::bit_cast<std::uint32_t>(value);
  const std::uint32_t twice = word + word;
  const std::uint32_t sign = word & 0x80000000u;
  std::uint32_t bias = std::max<std::uint32_t>(twice & 0xff000000u, 0x71000000u);
  // Scaling up then down makes what overflows infinity and leaves the bits to round.
  float base = (std::fabs(value) * 0x1.0p+112f) * 0x1.0p-110f;
  base = std::bit_cast<float>((bias >> 1) + 0x07800000u) + base;
  const std::uint32_t bits = std::bit_cast<std::uint32_t>(base);
  const std::uint32_t magnitude = ((bits >> 13) & 0x00007c00u) + (bits & 0x00000fffu);
  return static_cast<std::uint16_t>((sign >> 16) | (twice > 0xff000000u ? 0x7e00u : magnitude));
}

// --- the operations ------------------------------------------------------------------------

// Integers wrap around (computed in the unsigned type of the same width: no overflow UB).
template <typename T>
FABRIC_INLINE T sum(T a, T b) {
  if constexpr (std::is_integral_v<T>) {
    using Unsigned = std::make_unsigned_t<T>;
    return static_cast<T>(static_cast<Unsigned>(a) + static_cast<Unsigned>(b));
  } else {
    return a + b;
  }
}

template <typename T>
FABRIC_INLINE T product(T a, T b) {
  if constexpr (std::is_integral_v<T>) {
    using Unsigned = std::make_unsigned_t<T>;
    return static_cast<T>(static_cast<Unsigned>(a) * static_cast<Unsigned>(b));
  } else {
    return a * b;
  }
}

template <typename T, Reduction op>
FABRIC_INLINE T combine(T a, T b) {
  if constexpr (op == Reduction::kSum) return sum(a, b);
  if constexpr (op == Reduction::kProduct) return product(a, b);
  if constexpr (op == Reduction::kMin) return b < a ? b : a;
  if constexpr (op == Reduction::kMax) return a < b ? b : a;
}

// One pass per other input: each pass is a simple loop the vectoriser handles.
template <typename T, Reduction op>
FABRIC_INLINE void accumulate_native(T* __restrict out, const void* const* others, int n_others, std::size_t count) {
  for (int k = 0; k < n_others; ++k) {
    const T* __restrict other = static_cast<const T*>(others[k]);
    for (std::size_t i = 0; i < count; ++i) out[i] = combine<T, op>(out[i], other[i]);
  }
}

// 16-bit floats: a block at a time in float, so each element is rounded once, at the end.
template <Reduction op, float (*widen)(std::uint16_t), std::uint16_t (*narrow)(float)>
FABRIC_INLINE void accumulate_16bit(std::uint16_t* __restrict out, const void* const* others, int n_others,
                                    std::size_t count) {
  constexpr std::size_t kBlock = 512;
  float block[kBlock];
  for (std::size_t begin = 0; begin < count; begin += kBlock) {
    const std::size_t n = std::min(kBlock, count - begin);
    for (std::size_t i = 0; i < n; ++i) block[i] = widen(out[begin + i]);
    for (int k = 0; k < n_others; ++k) {
      const std::uint16_t* __restrict other = static_cast<const std::uint16_t*>(others[k]) + begin;
      for (std::size_t i = 0; i < n; ++i) block[i] = combine<float, op>(block[i], widen(other[i]));
    }
    for (std::size_t i = 0; i < n; ++i) out[begin + i] = narrow(block[i]);
  }
}

template <Reduction op>
FABRIC_INLINE void accumulate_typed(void* out, const void* const* others, int n_others, std::size_t count,
                                    DataType type) {
  switch (type) {
    case DataType::kFloat32: return accumulate_native<float, op>(static_cast<float*>(out), others, n_others, count);
    case DataType::kFloat64: return accumulate_native<double, op>(static_cast<double*>(out), others, n_others, count);
    case DataType::kInt8:
      return accumulate_native<std::int8_t, op>(static_cast<std::int8_t*>(out), others, n_others, count);
    case DataType::kUInt8:
      return accumulate_native<std::uint8_t, op>(static_cast<std::uint8_t*>(out), others, n_others, count);
    case DataType::kInt32:
      return accumulate_native<std::int32_t, op>(static_cast<std::int32_t*>(out), others, n_others, count);
    case DataType::kInt64:
      return accumulate_native<std::int64_t, op>(static_cast<std::int64_t*>(out), others, n_others, count);
    case DataType::kBFloat16:
      return accumulate_16bit<op, bfloat16_to_float, float_to_bfloat16>(static_cast<std::uint16_t*>(out), others,
                                                                         n_others, count);
    case DataType::kFloat16:
      return accumulate_16bit<op, float16_to_float, float_to_float16>(static_cast<std::uint16_t*>(out), others,
                                                                       n_others, count);
  }
}

}  // namespace

// Compiled for the baseline x86-64 and for AVX2; the loader picks one (an ifunc).
#if defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__)
__attribute__((target_clones("avx2", "default")))
#endif
void accumulate(void* out, const void* const* others, int n_others, std::size_t count, DataType type, Reduction op) {
  switch (op) {
    case Reduction::kSum: return accumulate_typed<Reduction::kSum>(out, others, n_others, count, type);
    case Reduction::kProduct: return accumulate_typed<Reduction::kProduct>(out, others, n_others, count, type);
    case Reduction::kMin: return accumulate_typed<Reduction::kMin>(out, others, n_others, count, type);
    case Reduction::kMax: return accumulate_typed<Reduction::kMax>(out, others, n_others, count, type);
  }
}

}  // namespace fabric::collectives::shm
