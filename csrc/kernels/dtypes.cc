// The tensor type table: weights and bytes per block, row sizes, names, and the activation row layout
// each type's products take. Plain code every variant shares, not a kernel.
#include "kernels/blocks.h"
#include "kernels/kernels.h"

namespace cpullm {

bool dtype_supported(int32_t type) {
  switch (type) {
#define CPULLM_DTYPE(name, id, block_size, block_bytes) case id:
#include "kernels/dtypes.def"
    return true;
  }
  return false;
}

int64_t block_size(DType type) {
  switch (type) {
#define CPULLM_DTYPE(name, id, block_size, block_bytes) \
  case DType::name: return block_size;
#include "kernels/dtypes.def"
  }
  return 1;
}

namespace {
constexpr int64_t table_block_bytes(DType type) {
  switch (type) {
#define CPULLM_DTYPE(name, id, block_size, block_bytes) \
  case DType::name: return block_bytes;
#include "kernels/dtypes.def"
  }
  return 0;
}
// The block layouts of blocks.h are the table's byte counts.
static_assert(table_block_bytes(DType::Q4_0) == sizeof(BlockQ4_0) &&
                  table_block_bytes(DType::Q4_1) == sizeof(BlockQ4_1) &&
                  table_block_bytes(DType::Q5_0) == sizeof(BlockQ5_0) &&
                  table_block_bytes(DType::Q5_1) == sizeof(BlockQ5_1) &&
                  table_block_bytes(DType::Q8_0) == sizeof(BlockQ8_0) &&
                  table_block_bytes(DType::IQ4_NL) == sizeof(BlockIQ4_NL) &&
                  table_block_bytes(DType::IQ4_XS) == sizeof(BlockIQ4_XS) &&
                  table_block_bytes(DType::Q2_K) == sizeof(BlockQ2_K) &&
                  table_block_bytes(DType::Q3_K) == sizeof(BlockQ3_K) &&
                  table_block_bytes(DType::Q4_K) == sizeof(BlockQ4_K) &&
                  table_block_bytes(DType::Q5_K) == sizeof(BlockQ5_K) &&
                  table_block_bytes(DType::Q6_K) == sizeof(BlockQ6_K),
              "dtypes.def and blocks.h disagree");
}  // namespace

int64_t block_bytes(DType type) { return table_block_bytes(type); }

int64_t row_bytes(DType type, int64_t cols) { return cols / block_size(type) * block_bytes(type); }

const char* dtype_name(DType type) {
  switch (type) {
#define CPULLM_DTYPE(name, id, block_size, block_bytes) \
  case DType::name: return #name;
#include "kernels/dtypes.def"
  }
  return "unknown";
}

bool uses_act_blocks(DType type) { return block_size(type) > 1; }

int64_t act_row_bytes(DType type, int64_t cols) {
  return uses_act_blocks(type) ? cols / kQK * static_cast<int64_t>(sizeof(ActBlock)) : cols * 4;
}

}  // namespace cpullm
