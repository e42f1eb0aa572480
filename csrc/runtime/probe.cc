// Runtime CPU probe. Compiled with NO ISA flags: it must run on the oldest CPU of its architecture.
//
// x86-64: cpuid says what the CPU implements; XCR0 (xgetbv) says which register state the OS saves,
// so AVX/AVX-512/AMX are usable only if their state bits are set; AMX tile data additionally needs a
// per-process permission from the kernel (arch_prctl ARCH_REQ_XCOMP_PERM, Linux >= 5.16).
// aarch64: the kernel's HWCAP/HWCAP2 auxiliary vector already reflects what userspace may use.
#include "cpullm/probe.h"

#include <cstring>
#include <string>

#if defined(__x86_64__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#elif defined(__aarch64__)
#include <sys/auxv.h>
#endif

namespace {

struct ProbeResult {
  std::string usable;
  std::string unusable;

  void add(const char* name, bool present, bool os_ok, const char* reason) {
    if (!present) return;
    std::string& out = os_ok ? usable : unusable;
    if (!out.empty()) out += os_ok ? "," : ";";
    out += name;
    if (!os_ok) {
      out += ":";
      out += reason;
    }
  }
};

#if defined(__x86_64__)
struct Regs {
  unsigned a = 0, b = 0, c = 0, d = 0;
};

Regs cpuid(unsigned leaf, unsigned sub) {
  Regs r;
  // Basic and extended (0x8000_0000+) leaves have separate maxima.
  if (static_cast<unsigned>(__get_cpuid_max(leaf & 0x80000000u, nullptr)) < leaf) return r;
  __cpuid_count(leaf, sub, r.a, r.b, r.c, r.d);
  return r;
}

bool bit(unsigned v, int b) { return (v >> b) & 1u; }

unsigned long long xgetbv0() {
  unsigned lo = 0, hi = 0;
  // Encoded by hand: the xgetbv mnemonic would need -mxsave, and this file takes no ISA flags.
  __asm__ volatile(".byte 0x0f, 0x01, 0xd0" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<unsigned long long>(hi) << 32) | lo;
}

bool amx_permission() {
  constexpr long kArchReqXcompPerm = 0x1023;
  constexpr long kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
}

ProbeResult probe() {
  ProbeResult r;
  const Regs l1 = cpuid(1, 0);
  const Regs l7 = cpuid(7, 0);
  const Regs l71 = l7.a >= 1 ? cpuid(7, 1) : Regs{};
  const bool osxsave = bit(l1.c, 27);
  const unsigned long long xcr0 = osxsave ? xgetbv0() : 0;
  const bool ymm = (xcr0 & 0x6) == 0x6;            // SSE + AVX state
  const bool zmm = (xcr0 & 0xe6) == 0xe6;          // + opmask, ZMM_Hi256, Hi16_ZMM
  const bool tiles = (xcr0 & 0x60000) == 0x60000;  // XTILECFG + XTILEDATA
  const char* no_ymm = "AVX state not enabled by the OS (XCR0)";
  const char* no_zmm = "AVX-512 state not enabled by the OS (XCR0)";

  r.add("sse4_2", bit(l1.c, 20), true, "");
  r.add("avx", bit(l1.c, 28), ymm, no_ymm);
  r.add("avx2", bit(l7.b, 5), ymm, no_ymm);
  r.add("fma", bit(l1.c, 12), ymm, no_ymm);
  r.add("f16c", bit(l1.c, 29), ymm, no_ymm);
  r.add("bmi2", bit(l7.b, 8), true, "");
  const Regs ext = cpuid(0x80000001u, 0);
  r.add("popcnt", bit(l1.c, 23), true, "");
  r.add("bmi1", bit(l7.b, 3), true, "");
  r.add("abm", bit(ext.c, 5), true, "");
  r.add("movbe", bit(l1.c, 22), true, "");
  r.add("avx512f", bit(l7.b, 16), zmm, no_zmm);
  r.add("avx512bw", bit(l7.b, 30), zmm, no_zmm);
  r.add("avx512vl", bit(l7.b, 31), zmm, no_zmm);
  r.add("avx512dq", bit(l7.b, 17), zmm, no_zmm);
  r.add("avx512cd", bit(l7.b, 28), zmm, no_zmm);
  r.add("avx512_vnni", bit(l7.c, 11), zmm, no_zmm);
  r.add("avx512_bf16", bit(l71.a, 5), zmm, no_zmm);
  r.add("avx512_fp16", bit(l7.d, 23), zmm, no_zmm);
  r.add("avx_vnni", bit(l71.a, 4), ymm, no_ymm);

  const bool has_tile = bit(l7.d, 24);
  const bool amx_ok = has_tile && tiles && amx_permission();
  const char* amx_reason = !tiles ? "AMX tile state not enabled by the OS (XCR0)"
                                  : "AMX tile permission refused by the kernel (arch_prctl)";
  r.add("amx_tile", has_tile, amx_ok, amx_reason);
  r.add("amx_bf16", bit(l7.d, 22), amx_ok, amx_reason);
  r.add("amx_int8", bit(l7.d, 25), amx_ok, amx_reason);
  return r;
}
#elif defined(__aarch64__)
ProbeResult probe() {
  ProbeResult r;
  const unsigned long hw = getauxval(AT_HWCAP);
  const unsigned long hw2 = getauxval(AT_HWCAP2);
  auto has = [](unsigned long v, int b) { return ((v >> b) & 1ul) != 0; };
  // Bit numbers from the kernel's arch/arm64/include/uapi/asm/hwcap.h.
  r.add("asimd", has(hw, 1), true, "");
  r.add("asimddp", has(hw, 20), true, "");
  r.add("asimdhp", has(hw, 10), true, "");
  r.add("fphp", has(hw, 9), true, "");
  r.add("bf16", has(hw2, 14), true, "");
  r.add("i8mm", has(hw2, 13), true, "");
  r.add("sve", has(hw, 22), true, "");
  r.add("sve2", has(hw2, 1), true, "");
  return r;
}
#else
#error "cpullm: the runtime probe supports x86_64 and aarch64 Linux"
#endif

const ProbeResult& cached() {
  static const ProbeResult result = probe();
  return result;
}

size_t copy_out(const std::string& s, char* buf, size_t n) {
  if (buf != nullptr && n > 0) {
    const size_t k = s.size() < n - 1 ? s.size() : n - 1;
    std::memcpy(buf, s.data(), k);
    buf[k] = '\0';
  }
  return s.size();
}

}  // namespace

extern "C" {

__attribute__((visibility("default"))) int cpullm_probe_abi_version(void) { return CPULLM_PROBE_ABI_VERSION; }

__attribute__((visibility("default"))) const char* cpullm_probe_arch(void) {
#if defined(__x86_64__)
  return "x86_64";
#else
  return "aarch64";
#endif
}

__attribute__((visibility("default"))) size_t cpullm_probe_usable(char* buf, size_t n) {
  return copy_out(cached().usable, buf, n);
}

__attribute__((visibility("default"))) size_t cpullm_probe_unusable(char* buf, size_t n) {
  return copy_out(cached().unusable, buf, n);
}

}  // extern "C"
