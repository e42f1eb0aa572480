/* cpullm runtime CPU probe: the one library that is safe to load on any CPU of its architecture.
 * It is compiled with no ISA flags. Python loads it first, asks which features are usable, and only
 * then loads a variant library whose required features are all usable. Plain C types only. */
#ifndef CPULLM_PROBE_H
#define CPULLM_PROBE_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CPULLM_PROBE_ABI_VERSION 1

int cpullm_probe_abi_version(void);

/* "x86_64" or "aarch64". */
const char* cpullm_probe_arch(void);

/* Usable features (the CPU has them AND the OS lets this process use them), comma separated, named as
 * the recipes name them (Linux /proc/cpuinfo spelling). Writes at most n bytes including the NUL.
 * Returns the full length needed (excluding the NUL); a return >= n means the buffer was too small. */
size_t cpullm_probe_usable(char* buf, size_t n);

/* Features the CPU reports but this process cannot use, as "feature:reason" items separated by ';'.
 * Same buffer convention as cpullm_probe_usable. */
size_t cpullm_probe_unusable(char* buf, size_t n);

#ifdef __cplusplus
}
#endif

#endif /* CPULLM_PROBE_H */
