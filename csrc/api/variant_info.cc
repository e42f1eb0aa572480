// Identity of this variant library: what it was built from and what it requires.
#include "cpullm/cpullm.h"

#ifndef CPULLM_VARIANT_NAME
#error "CPULLM_VARIANT_NAME must be defined by the build (CMakeLists.txt)"
#endif

namespace {

constexpr const char kKernelSets[] = "ref"
#if CPULLM_KSET_AVX2
                                     ",avx2"
#endif
#if CPULLM_KSET_AVX_VNNI
                                     ",avx_vnni"
#endif
#if CPULLM_KSET_AVX512
                                     ",avx512"
#endif
#if CPULLM_KSET_AVX512_VNNI
                                     ",avx512_vnni"
#endif
#if CPULLM_KSET_AVX512_BF16
                                     ",avx512_bf16"
#endif
#if CPULLM_KSET_AMX
                                     ",amx"
#endif
#if CPULLM_KSET_NEON
                                     ",neon"
#endif
#if CPULLM_KSET_DOTPROD
                                     ",dotprod"
#endif
#if CPULLM_KSET_I8MM
                                     ",i8mm"
#endif
#if CPULLM_KSET_SVE
                                     ",sve"
#endif
    ;

}  // namespace

extern "C" {

int cpullm_abi_version(void) { return CPULLM_ABI_VERSION; }
const char* cpullm_variant_name(void) { return CPULLM_VARIANT_NAME; }
const char* cpullm_variant_features(void) { return CPULLM_VARIANT_FEATURES; }
const char* cpullm_variant_kernel_sets(void) { return kKernelSets; }

}  // extern "C"
