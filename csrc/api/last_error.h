// The per-thread message behind cpullm_last_error(), shared by every part of the C ABI.
#ifndef CPULLM_API_LAST_ERROR_H
#define CPULLM_API_LAST_ERROR_H

#include <string>

namespace cpullm {
void set_last_error(std::string message);
}  // namespace cpullm

#endif  // CPULLM_API_LAST_ERROR_H
