// CRC-32C (Castagnoli), the checksum TFRecord files carry, and the "masked" form they store
// (a rotation plus a constant, so that a CRC over data that itself holds CRCs stays strong).
#pragma once

#include <cstdint>
#include <string_view>

namespace fabric::loggers {

// CRC-32C of `data`; crc32c("123456789") == 0xE3069283.
std::uint32_t crc32c(std::string_view data);

// TFRecord's mask: ((crc >> 15) | (crc << 17)) + 0xa282ead8.
std::uint32_t mask_crc(std::uint32_t crc);

inline std::uint32_t masked_crc32c(std::string_view data) { return mask_crc(crc32c(data)); }

}  // namespace fabric::loggers
