/* cpullm C ABI: the only interface Python sees (through ctypes). Plain C types only.
 *
 * Every variant library (libcpullm_<variant>.so) exports the same functions; which one is loaded is
 * decided by Python from the probe library's answer (see probe.h) before anything ISA-specific runs.
 * Bump CPULLM_ABI_VERSION on any incompatible change; Python refuses a library with another version. */
#ifndef CPULLM_H
#define CPULLM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CPULLM_API __attribute__((visibility("default")))
#define CPULLM_ABI_VERSION 1

CPULLM_API int cpullm_abi_version(void);

/* The recipe this library was built from, e.g. "avx512_bf16". */
CPULLM_API const char* cpullm_variant_name(void);

/* The CPU features this library was compiled to require, comma separated (recipe spelling). */
CPULLM_API const char* cpullm_variant_features(void);

/* The kernel sets compiled in, comma separated, e.g. "ref,avx2,avx512". */
CPULLM_API const char* cpullm_variant_kernel_sets(void);

#ifdef __cplusplus
}
#endif

#endif /* CPULLM_H */
