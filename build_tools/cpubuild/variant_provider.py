"""A wheel-variant provider plugin (variantlib's plugin API) backed by cpubuild's own CPU probe.

It answers for the same namespaces and properties as ``provider-variant-x86-64`` and
``provider-variant-aarch64`` (see `cpubuild.wheel_variants`), for two reasons:
- the plugins on PyPI (0.0.1.post2) implement an older plugin API than variantlib 0.2 calls (they
  lack ``get_all_configs``), so variantlib cannot load them;
- they ask archspec, which reads /proc/cpuinfo flags only: on a machine whose OS has not enabled the
  AVX-512 register state they report level v4, and the avx512 variant they pick fails at import.
  cpubuild's probe counts a feature only when the OS lets a process use it (XCR0, AMX permission).

Use: ``plugin-api = "cpubuild.variant_provider:X8664Plugin"`` (or ``AArch64Plugin``), e.g. to resolve an
index's variants.json with variantlib (`get_variants_by_priority`) on this machine.
"""

from __future__ import annotations

from dataclasses import dataclass

from cpubuild import wheel_variants
from cpubuild.features import AARCH64, X86_64


@dataclass(frozen=True)
class FeatureConfig:
    """variantlib's VariantFeatureConfigType: one feature and its values, most preferred first."""

    name: str
    values: list[str]
    multi_value: bool = False


def _configs(found: list[tuple[str, str, list[str]]]) -> list[FeatureConfig]:
    return [FeatureConfig(feature, values) for _namespace, feature, values in found]


class _CpuPlugin:
    arch: str = ""
    namespace: str = ""

    @classmethod
    def get_all_configs(cls) -> list[FeatureConfig]:
        return _configs(wheel_variants.all_properties(cls.arch))

    @classmethod
    def get_supported_configs(cls) -> list[FeatureConfig]:
        from cpubuild.host.detect import detect_host

        host = detect_host()
        if host.arch != cls.arch:
            return []
        return _configs(wheel_variants.supported(cls.arch, frozenset(host.usable_features)))


class X8664Plugin(_CpuPlugin):
    arch = X86_64
    namespace = wheel_variants.PROVIDERS[X86_64].namespace


class AArch64Plugin(_CpuPlugin):
    arch = AARCH64
    namespace = wheel_variants.PROVIDERS[AARCH64].namespace
