#include "checkpoint/crc32.h"

#include <zlib.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace fabric::checkpoint {
namespace {

std::uint32_t crc32_zlib(std::uint32_t crc, const unsigned char* data, std::size_t size) {
  return static_cast<std::uint32_t>(crc32_z(crc, data, size));
}

#if defined(__x86_64__)

// One 128-bit fold: x's low half times the low constant, its high half times the high
// one, both added (xor) to the next 16 bytes of the message.
__attribute__((target("pclmul,sse4.1"))) inline __m128i fold(__m128i x, __m128i constants, __m128i next) {
  return _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(x, constants, 0x00), _mm_clmulepi64_si128(x, constants, 0x11)),
                       next);
}

__attribute__((target("pclmul,sse4.1"))) std::uint32_t crc32_pclmul(std::uint32_t crc, const unsigned char* data,
                                                                     std::size_t size) {
  if (size < 64) return crc32_zlib(crc, data, size);
  const auto load = [](const unsigned char* at) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(at)); };
  // x^(512±32) and x^(128±32) mod P, bit-reflected: they move a 128-bit lane 64 or 16
  // bytes further down the message.
  const __m128i by_64_bytes = _mm_set_epi64x(0x1c6e41596, 0x154442bd4);
  const __m128i by_16_bytes = _mm_set_epi64x(0x0ccaa009e, 0x1751997d0);

  // zlib's register starts as ~crc, xored into the first four bytes.
  __m128i x0 = _mm_xor_si128(load(data), _mm_cvtsi32_si128(static_cast<int>(~crc)));
  __m128i x1 = load(data + 16), x2 = load(data + 32), x3 = load(data + 48);
  data += 64;
  size -= 64;
  for (; size >= 64; data += 64, size -= 64) {
    x0 = fold(x0, by_64_bytes, load(data));
    x1 = fold(x1, by_64_bytes, load(data + 16));
    x2 = fold(x2, by_64_bytes, load(data + 32));
    x3 = fold(x3, by_64_bytes, load(data + 48));
  }
  __m128i x = fold(fold(fold(x0, by_16_bytes, x1), by_16_bytes, x2), by_16_bytes, x3);
  for (; size >= 16; data += 16, size -= 16) x = fold(x, by_16_bytes, load(data));

  // The 16 folded bytes, read from a zero register, leave the register where the whole
  // prefix left it; zlib reduces them and the tail. crc32_z(~0, ...) starts from zero.
  alignas(16) unsigned char folded[16];
  _mm_store_si128(reinterpret_cast<__m128i*>(folded), x);
  return crc32_zlib(crc32_zlib(0xFFFFFFFFu, folded, 16), data, size);
}

bool has_pclmul() {
  static const bool supported = __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.1");
  return supported;
}

#endif

}  // namespace

std::uint32_t crc32(std::uint32_t crc, const void* data, std::size_t size) {
  const auto* bytes = static_cast<const unsigned char*>(data);
#if defined(__x86_64__)
  if (has_pclmul()) return crc32_pclmul(crc, bytes, size);
#endif
  return crc32_zlib(crc, bytes, size);
}

std::uint32_t crc32_combine(std::uint32_t crc_a, std::uint32_t crc_b, std::uint64_t size_b) {
  return static_cast<std::uint32_t>(crc32_combine64(crc_a, crc_b, static_cast<z_off64_t>(size_b)));
}

}  // namespace fabric::checkpoint
