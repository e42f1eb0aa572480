"""PEP 825 variant wheels: a tuned wheel's variant label and its properties in the providers' namespaces.

A tuned wheel (one recipe) is a variant wheel: ``cpullm-0.1.0-py3-none-manylinux_2_34_x86_64-avx2.whl``,
with ``*.dist-info/variant.json`` mapping the label to properties such as ``x86_64 :: level :: v3`` and
``x86_64 :: avx512_vnni :: on``. Installers that know nothing of variants skip such names (they are not
PEP 427 names) and install the portable wheel, a plain wheel; a variant-aware installer maps labels to
properties through the index's ``cpullm-0.1.0-variants.json`` and picks the best variant the CPU supports.

The properties use the namespaces and spelling of the provider plugins ``provider-variant-x86-64``
(namespace ``x86_64``: ``level`` v1..v4, and one feature per CPU flag with the value ``on``) and
``provider-variant-aarch64`` (namespace ``aarch64``: one feature per CPU flag, ``on``). The JSON layout is
the one variantlib 0.2 reads and writes (``providers`` beside ``default-priorities`` and ``variants``);
tests validate it with variantlib. Stdlib only: `cpubuild wheel` and `cpubuild index` write these files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

from cpubuild.features import AARCH64, X86_64
from cpubuild.host.uarch import PSABI_LEVELS

VARIANT_JSON: Final = "variant.json"  # in the wheel's *.dist-info folder
NULL_LABEL: Final = "null"  # the variant with no properties (PEP 825 reserves the label)
# The variantlib release this layout was checked against writes this schema URL.
SCHEMA_URL: Final = "https://variants-schema.wheelnext.dev/v0.2.0.json"
LABEL_PATTERN: Final = re.compile(r"[0-9a-z_.]{1,16}")
LEVEL: Final = "level"  # x86_64 :: level :: v1..v4
ON: Final = "on"


@dataclass(frozen=True)
class Provider:
    """A provider plugin: the namespace it governs and the CPU flags it has a property for."""

    namespace: str
    requirement: str  # what an installer installs to run the plugin
    plugin_api: str
    # Our feature names (cpubuild.features) the plugin defines, in the plugin's preference order
    # (a test checks this against the installed plugin's own list).
    features: tuple[str, ...]


PROVIDERS: Final[dict[str, Provider]] = {
    X86_64: Provider(
        "x86_64", "provider-variant-x86-64>=0.0.1", "provider_variant_x86_64.plugin:X8664Plugin",
        ("avx_vnni", "avx512_bf16", "avx512_vnni", "avx512bw", "avx512cd", "avx512dq", "avx512f", "avx512vl",
         "avx2", "avx", "bmi2", "bmi1", "abm", "f16c", "fma", "movbe", "sse4_2", "popcnt"),
    ),
    AARCH64: Provider(
        "aarch64", "provider-variant-aarch64>=0.0.1", "provider_variant_aarch64.plugin:AArch64Plugin",
        ("sve2", "bf16", "i8mm", "asimddp", "asimdhp", "fphp", "sve", "asimd"),
    ),
}  # fmt: skip
# Every wheel of a release lists every namespace (PEP 825: all namespaces used in the package version).
NAMESPACES: Final = tuple(p.namespace for p in PROVIDERS.values())

Properties = dict[str, dict[str, list[str]]]  # namespace -> feature -> values, as in variant.json


class VariantError(ValueError):
    """A recipe cannot be described as a variant, or variant metadata is inconsistent."""


def _level_number(level: str) -> int:
    return int(level.rsplit("v", 1)[1])


def x86_level(features: frozenset[str]) -> tuple[int, frozenset[str]]:
    """The highest x86-64 level whose flags (those a recipe can name) `features` all include, and the flags
    of that level and below.

    Only the flags of our vocabulary count: a recipe built with -march=x86-64-v3 names avx2, fma, bmi2 ...
    but not the scalar flags (xsave, cx16) every CPU of that level has.
    """
    from cpubuild.features import X86_FEATURES

    level, implied = 1, frozenset[str]()
    covered = frozenset[str]()
    for name, flags in PSABI_LEVELS:
        covered |= flags
        # Levels nest in hardware, so a level counts even when a lower one's flags are not all named
        # (the avx2 recipe names popcnt but not sse4_2).
        if (flags & X86_FEATURES.keys()) <= features:
            level, implied = _level_number(name), covered
    return level, implied


def inexpressible(arch: str, features: list[str] | tuple[str, ...]) -> list[str]:
    """The features the provider for `arch` has no property for (a recipe needing one is no variant)."""
    provider = PROVIDERS.get(arch)
    return sorted(set(features) - set(provider.features)) if provider else sorted(features)


def properties(arch: str, features: list[str] | tuple[str, ...]) -> Properties:
    """The variant properties of a build that requires `features` (a recipe's full list) on `arch`."""
    provider = PROVIDERS.get(arch)
    if provider is None:
        raise VariantError(f"no variant provider for {arch}; known: {', '.join(PROVIDERS)}")
    wanted = frozenset(features)
    unknown = inexpressible(arch, features)
    if unknown:
        raise VariantError(
            f"{', '.join(unknown)} cannot be expressed as {provider.namespace} variant properties: the "
            f"{provider.requirement.split('>')[0]} plugin defines no property for them, so a variant wheel "
            "would install on CPUs without them; ship this recipe in the portable wheel (--isa all), which "
            "loads it at import where the CPU allows"
        )
    props: dict[str, list[str]] = {}
    implied = frozenset[str]()
    if arch == X86_64:
        level, implied = x86_level(wanted)
        if level > 1:
            props[LEVEL] = [f"v{level}"]
    for feature in provider.features:
        if feature in wanted and feature not in implied:
            props[feature] = [ON]
    return {provider.namespace: props} if props else {}


def label_for(recipe: str, props: Properties) -> str:
    """The variant label of a recipe: its name, or ``null`` when it needs nothing (the null variant)."""
    if not props:
        return NULL_LABEL
    if recipe == NULL_LABEL or not LABEL_PATTERN.fullmatch(recipe):
        raise VariantError(
            f"recipe name {recipe!r} cannot be a variant label (1-16 of a-z, 0-9, '_', '.'; not 'null'); "
            "rename the recipe"
        )
    return recipe


def document(variants: dict[str, Properties]) -> dict[str, Any]:
    """A variant.json (one label) or a {name}-{version}-variants.json (all labels) document."""
    return {
        "$schema": SCHEMA_URL,
        "default-priorities": {"namespace": list(NAMESPACES)},
        "providers": {
            p.namespace: {"requires": [p.requirement], "plugin-api": p.plugin_api} for p in PROVIDERS.values()
        },
        "variants": {label: variants[label] for label in sorted(variants)},
    }


def _values_ok(values: object) -> bool:
    return isinstance(values, list) and bool(values) and all(isinstance(x, str) for x in values)


def check(doc: object, expected_label: str | None = None) -> dict[str, Properties]:
    """The labels and properties of a variant.json document, or VariantError saying what is wrong.

    A structural check (stdlib): the full validation is variantlib's (`validate_with_variantlib`).
    """
    if not isinstance(doc, dict) or not isinstance(doc.get("variants"), dict):
        raise VariantError("variant metadata must be a JSON object with a 'variants' object")
    variants: dict[str, Properties] = {}
    for label, props in doc["variants"].items():
        if not isinstance(label, str) or not LABEL_PATTERN.fullmatch(label):
            raise VariantError(f"variant label {label!r} is not 1-16 of a-z, 0-9, '_', '.'")
        ok = isinstance(props, dict) and all(
            isinstance(features, dict) and all(_values_ok(v) for v in features.values())
            for features in props.values()
        )
        if not ok:
            raise VariantError(f"variant {label!r}: properties must map namespace -> feature -> [values]")
        variants[label] = props
    if expected_label is not None and list(variants) != [expected_label]:
        described = sorted(variants)
        raise VariantError(f"variant.json describes {described}; the file name says {expected_label!r}")
    return variants


def merge(per_wheel: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The index-level variants.json of one release from its wheels' variant.json (wheel name -> document).

    PEP 825's rules: labels merge; a label seen twice must have the same properties; the other keys
    must agree (every cpubuild wheel writes the same ones).
    """
    variants: dict[str, Properties] = {}
    header: dict[str, Any] | None = None
    for wheel_name, doc in sorted(per_wheel.items()):
        for label, props in check(doc).items():
            if label in variants and variants[label] != props:
                raise VariantError(
                    f"{wheel_name}: variant {label!r} has properties {props}, but another wheel of the same "
                    f"version gives it {variants[label]}; one label must mean one property set"
                )
            variants[label] = props
        rest = {k: v for k, v in doc.items() if k != "variants"}
        if header is not None and rest != header:
            raise VariantError(
                f"{wheel_name}: its variant.json disagrees with the release's other wheels outside "
                "'variants' (schema, priorities or providers); rebuild the wheels with one cpubuild"
            )
        header = rest
    return {**(header or {}), "variants": {label: variants[label] for label in sorted(variants)}}


def supported(arch: str, usable: frozenset[str]) -> list[tuple[str, str, list[str]]]:
    """The properties a CPU with `usable` features supports, best first: (namespace, feature, values).

    The order is what a provider plugin reports: for x86_64 the level first (highest first), then the
    flags in the plugin's preference order. `usable` must hold only features the OS lets us use (the
    probe's usable_features): a CPU flag whose register state the OS has not enabled is not supported.
    """
    provider = PROVIDERS.get(arch)
    if provider is None:
        return []
    found: list[tuple[str, str, list[str]]] = []
    if arch == X86_64:
        from cpubuild.host.uarch import psabi_level

        top = _level_number(psabi_level(usable))
        found.append((provider.namespace, LEVEL, [f"v{n}" for n in range(top, 0, -1)]))
    found += [(provider.namespace, f, [ON]) for f in provider.features if f in usable]
    return found


def all_properties(arch: str) -> list[tuple[str, str, list[str]]]:
    """Every property the provider for `arch` defines for our vocabulary (its plugin's all configs)."""
    provider = PROVIDERS[arch]
    found = [(provider.namespace, LEVEL, ["v4", "v3", "v2", "v1"])] if arch == X86_64 else []
    return found + [(provider.namespace, f, [ON]) for f in provider.features]


def validate_with_variantlib(doc: dict[str, Any], label: str | None = None) -> str | None:
    """Validate a variant.json (one `label`) or variants.json document with variantlib, if installed.

    Returns the variantlib version that validated it, or None when variantlib is not installed
    (`pip install 'cpubuild[variants]'`). Raises VariantError with variantlib's message when invalid.
    """
    import json
    from importlib import metadata

    try:
        from variantlib.errors import ValidationError
        from variantlib.variant_dist_info import VariantDistInfo
        from variantlib.variants_json import VariantsJson
    except ImportError:
        return None
    try:
        if label is None:
            VariantsJson(doc)  # type: ignore[arg-type]
        else:
            VariantDistInfo(json.dumps(doc), expected_label=label)
    except ValidationError as exc:
        raise VariantError(f"variantlib rejects the variant metadata: {exc}") from None
    return f"variantlib {metadata.version('variantlib')}"
