// The element-wise reductions of the shared-memory collectives: `out = op(out, other_1, ...,
// other_k)` over plain arrays, vectorised by the compiler (and compiled once more for AVX2,
// picked at run time). Torch-free, so that they are tested and benchmarked on their own.
// bfloat16 and float16 are widened to float, reduced, and rounded once (to nearest even):
// more exact than a pairwise sum in 16 bits, which is what Gloo does.
#pragma once

#include <cstddef>
#include <string_view>

namespace fabric::collectives::shm {

enum class DataType { kFloat32, kFloat64, kBFloat16, kFloat16, kInt8, kUInt8, kInt32, kInt64 };
enum class Reduction { kSum, kProduct, kMin, kMax };

std::size_t element_size(DataType type);
std::string_view name(DataType type);

// out[i] = op(out[i], others[0][i], ..., others[n_others - 1][i]) for i < count. `out` may
// not overlap any of `others`. Integer sums and products wrap around (two's complement).
void accumulate(void* out, const void* const* others, int n_others, std::size_t count, DataType type, Reduction op);

}  // namespace fabric::collectives::shm
