// Identity of this variant library: what it was built from, what it requires, which kernel sets it has.
#include <iterator>
#include <string>

#include "cpullm/cpullm.h"

#ifndef CPULLM_VARIANT_NAME
#error "CPULLM_VARIANT_NAME must be defined by the build (CMakeLists.txt)"
#endif

namespace {

// Comma separated lists, at compile time: does `item` (up to its ',' or end) occur in `list`?
constexpr bool item_end(char c) { return c == '\0' || c == ','; }
constexpr const char* next_item(const char* p) {
  while (!item_end(*p)) ++p;
  return *p == ',' ? p + 1 : p;
}
constexpr bool same_item(const char* a, const char* b) {
  while (!item_end(*a) && *a == *b) ++a, ++b;
  return item_end(*a) && item_end(*b);
}
constexpr bool list_has(const char* list, const char* item) {
  for (const char* p = list; *p != '\0'; p = next_item(p)) {
    if (same_item(p, item)) return true;
  }
  return false;
}
constexpr bool covers(const char* have, const char* need) {
  for (const char* p = need; *p != '\0'; p = next_item(p)) {
    if (!list_has(have, p)) return false;
  }
  return true;
}

// A recipe that lists a kernel set must require every CPU feature the set's code executes; otherwise the
// probe could pick this library on a CPU that lacks one (SIGILL).
#define CPULLM_KERNEL_SET(set, features, provides)                                                     \
  static_assert(covers(CPULLM_VARIANT_FEATURES, features),                                             \
                "kernel set " #set " executes the CPU features " features                              \
                ", and this variant's recipe does not require them all: add them to its features (or " \
                "its parent's), or drop " #set " from its kernels");
#include "kernels/kernel_sets.def"

// The kernel sets compiled in, best first, then the reference.
constexpr const char* kSets[] = {
#define CPULLM_KERNEL_SET(set, features, provides) #set,
#include "kernels/kernel_sets.def"
    "ref"};

}  // namespace

extern "C" {

int cpullm_abi_version(void) { return CPULLM_ABI_VERSION; }
const char* cpullm_variant_name(void) { return CPULLM_VARIANT_NAME; }
const char* cpullm_variant_features(void) { return CPULLM_VARIANT_FEATURES; }

// "ref" first, then from the plainest set to the best one, e.g. "ref,avx2,avx512".
const char* cpullm_variant_kernel_sets(void) {
  static const std::string names = [] {
    std::string joined;
    for (auto it = std::rbegin(kSets); it != std::rend(kSets); ++it) {
      if (!joined.empty()) joined += ',';
      joined += *it;
    }
    return joined;
  }();
  return names.c_str();
}

}  // extern "C"
