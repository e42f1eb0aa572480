"""Host probes: CPU features from cpuid/hwcaps/cpuinfo, OS state, microarchitecture, cores."""
