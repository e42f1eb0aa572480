// The tensor type table: weights and bytes per block, row sizes, names, and the activation row layout
// each type's products take. Plain code every variant shares, not a kernel.
#include "kernels/blocks.h"
#include "kernels/kernels.h"

namespace cpullm {

bool dtype_supported(int32_t type) {
  switch (static_cast<DType>(type)) {
    case DType::F32: case DType::F16: case DType::BF16: case DType::Q4_0:
    case DType::Q4_1: case DType::Q8_0: case DType::Q4_K: case DType::Q6_K:
      return true;
  }
  return false;
}

int64_t block_size(DType type) {
  switch (type) {
    case DType::Q4_0: case DType::Q4_1: case DType::Q8_0: return kQK;
    case DType::Q4_K: case DType::Q6_K: return kQKK;
    default: return 1;
  }
}

int64_t block_bytes(DType type) {
  switch (type) {
    case DType::F32: return 4;
    case DType::F16: case DType::BF16: return 2;
    case DType::Q4_0: return sizeof(BlockQ4_0);
    case DType::Q4_1: return sizeof(BlockQ4_1);
    case DType::Q8_0: return sizeof(BlockQ8_0);
    case DType::Q4_K: return sizeof(BlockQ4_K);
    case DType::Q6_K: return sizeof(BlockQ6_K);
  }
  return 0;
}

int64_t row_bytes(DType type, int64_t cols) { return cols / block_size(type) * block_bytes(type); }

const char* dtype_name(DType type) {
  switch (type) {
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::Q4_0: return "Q4_0";
    case DType::Q4_1: return "Q4_1";
    case DType::Q8_0: return "Q8_0";
    case DType::Q4_K: return "Q4_K";
    case DType::Q6_K: return "Q6_K";
  }
  return "unknown";
}

bool uses_act_blocks(DType type) { return block_size(type) > 1; }

int64_t act_row_bytes(DType type, int64_t cols) {
  return uses_act_blocks(type) ? cols / kQK * static_cast<int64_t>(sizeof(ActBlock)) : cols * 4;
}

}  // namespace cpullm
