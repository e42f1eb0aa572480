// cpullm_selftest driver: dlopen a variant library and run its self-test (every compiled fast path vs the
// reference). Used where Python cannot load the library directly, e.g. an aarch64 build under
// qemu-aarch64 on an x86_64 host:  qemu-aarch64 -L /usr/aarch64-linux-gnu -cpu max ./cpullm_selftest lib.so
// Prints the library's kernel sets ("kernel sets: ref,neon,..."), then the self-test's report.
// Exit status: 0 all checks passed, 1 some failed, 2 the library could not be loaded.
#include <dlfcn.h>

#include <cstdio>
#include <vector>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s path/to/libcpullm_<variant>.so\n", argv[0]);
    return 2;
  }
  void* lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    std::fprintf(stderr, "cannot load %s: %s\n", argv[1], dlerror());
    return 2;
  }
  using SelfTest = int (*)(char*, size_t);
  using Names = const char* (*)();
  auto selftest = reinterpret_cast<SelfTest>(dlsym(lib, "cpullm_selftest"));
  auto kernel_sets = reinterpret_cast<Names>(dlsym(lib, "cpullm_variant_kernel_sets"));
  if (selftest == nullptr || kernel_sets == nullptr) {
    std::fprintf(stderr,
                 "%s lacks cpullm_selftest or cpullm_variant_kernel_sets; is it a cpullm variant library?\n",
                 argv[1]);
    return 2;
  }
  std::printf("kernel sets: %s\n", kernel_sets());
  std::vector<char> report(1 << 16);
  const int failures = selftest(report.data(), report.size());
  std::fputs(report.data(), stdout);
  return failures == 0 ? 0 : 1;
}
