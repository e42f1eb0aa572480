// <immintrin.h> for the x86 kernel sets. GCC 12 reports false "may be used uninitialized" warnings
// inside its own AVX-512 intrinsic headers once they are inlined (GCC bug 105593, fixed in GCC 13);
// with -Werror they would break the build, so they are silenced for the kernel files only.
#ifndef CPULLM_KERNELS_X86_INTRIN_H
#define CPULLM_KERNELS_X86_INTRIN_H

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>

#endif  // CPULLM_KERNELS_X86_INTRIN_H
