// CRC-32 as zip and zlib define it (crc32_z's values), fast: on x86 with PCLMULQDQ, 64 bytes
// at a time by carry-less multiplication ("folding", as in Intel's white paper "Fast CRC
// Computation for Generic Polynomials Using PCLMULQDQ" and Linux's crc32-pclmul), about
// three times zlib 1.2's table-driven speed; elsewhere zlib's own. Torch-free.
#pragma once

#include <cstddef>
#include <cstdint>

namespace fabric::checkpoint {

// The CRC of `size` bytes at `data` continued from `crc` (0 to start), as crc32_z.
std::uint32_t crc32(std::uint32_t crc, const void* data, std::size_t size);

// The CRC of A then B from the CRCs of A and of B, and B's length (zlib's crc32_combine):
// pieces checksummed on several threads give the whole record's CRC.
std::uint32_t crc32_combine(std::uint32_t crc_a, std::uint32_t crc_b, std::uint64_t size_b);

}  // namespace fabric::checkpoint
