"""PEP 825 variant metadata: properties per recipe, checked against the provider plugins and variantlib,
and variantlib's resolution picking the best variant on recorded machines and on this host."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import archspec.cpu
import pytest
from variantlib.api import get_variants_by_priority
from variantlib.models.provider import ProviderConfig, VariantFeatureConfig
from variantlib.resolver.lib import sort_and_filter_supported_variants
from variantlib.variants_json import VariantsJson

from cpubuild import wheel_variants
from cpubuild.host.detect import detect_host, host_from_inputs, inputs_from_machine_file
from cpubuild.recipes import load_recipes
from cpubuild.selection import select

MACHINES = Path(__file__).resolve().parents[1] / "fixtures" / "cpuinfo"
X86, ARM = "x86_64", "aarch64"

EXPECTED_PROPERTIES = {
    "generic": {},
    "avx2": {X86: {"level": ["v3"]}},
    "avx_vnni": {X86: {"level": ["v3"], "avx_vnni": ["on"]}},
    "avx512": {X86: {"level": ["v4"]}},
    "avx512_vnni": {X86: {"level": ["v4"], "avx512_vnni": ["on"]}},
    "avx512_bf16": {X86: {"level": ["v4"], "avx512_bf16": ["on"], "avx512_vnni": ["on"]}},
    "armv8": {ARM: {"asimd": ["on"]}},
    "dotprod": {ARM: {"asimddp": ["on"], "asimdhp": ["on"], "fphp": ["on"], "asimd": ["on"]}},
    "i8mm": {ARM: {f: ["on"] for f in ("bf16", "i8mm", "asimddp", "asimdhp", "fphp", "asimd")}},
    "sve": {ARM: {f: ["on"] for f in ("bf16", "i8mm", "asimddp", "asimdhp", "fphp", "sve", "asimd")}},
}
# machine: the variants variantlib ranks compatible, best first (amx is no variant: see below)
EXPECTED_ORDER = {
    "haswell": ["avx2"],
    "skylake_sp": ["avx512", "avx2"],
    "icelake_sp": ["avx512_vnni", "avx512", "avx2"],
    "sapphire_rapids": ["avx512_bf16", "avx512_vnni", "avx512", "avx_vnni", "avx2"],
    "zen4": ["avx512_bf16", "avx512_vnni", "avx512", "avx2"],
    # the OS has not enabled the ZMM state: archspec (the PyPI plugins) would say level v4; the probe does not
    "zen5_no_zmm_state": ["avx_vnni", "avx2"],
    "no_zmm_state": ["avx2"],
    "graviton2": ["dotprod", "armv8"],
    "graviton3": ["sve", "i8mm", "dotprod", "armv8"],
}


def _variant_recipes() -> list:
    return [r for r in load_recipes().all() if not wheel_variants.inexpressible(r.arch, r.features)]


def _index_document() -> dict:
    variants = {}
    for recipe in _variant_recipes():
        props = wheel_variants.properties(recipe.arch, recipe.features)
        variants[wheel_variants.label_for(recipe.name, props)] = props
    return wheel_variants.document(variants)


def test_each_recipe_has_its_properties_and_only_amx_is_refused():
    found = {}
    for recipe in load_recipes().all():
        if recipe.name == "amx":
            with pytest.raises(wheel_variants.VariantError, match="amx_bf16, amx_int8, amx_tile cannot be"):
                wheel_variants.properties(recipe.arch, recipe.features)
            continue
        found[recipe.name] = wheel_variants.properties(recipe.arch, recipe.features)
    assert found == EXPECTED_PROPERTIES
    assert wheel_variants.label_for("generic", {}) == "null"  # PEP 825's null variant: no properties


def test_every_variant_json_and_the_merged_variants_json_validate_with_variantlib():
    for recipe in _variant_recipes():
        props = wheel_variants.properties(recipe.arch, recipe.features)
        label = wheel_variants.label_for(recipe.name, props)
        doc = json.loads(json.dumps(wheel_variants.document({label: props})))
        assert wheel_variants.validate_with_variantlib(doc, label) == "variantlib 0.2.2"
    assert wheel_variants.validate_with_variantlib(_index_document()) == "variantlib 0.2.2"


def test_variantlib_rejects_what_pep_825_forbids():
    """The validation can fail: a label that the file name does not carry, a bad property value."""
    doc = wheel_variants.document({"avx2": {X86: {"level": ["v3"]}}})
    with pytest.raises(wheel_variants.VariantError, match="variantlib rejects"):
        wheel_variants.validate_with_variantlib(doc, "avx512")
    bad = wheel_variants.document({"avx2": {X86: {"level": ["V3!"]}}})
    with pytest.raises(wheel_variants.VariantError, match="variantlib rejects"):
        wheel_variants.validate_with_variantlib(bad, "avx2")


# The PyPI plugins' own tables, read in a child process: importing them swaps in a vendored archspec.
PLUGIN_TABLE = """
import json, sys
from provider_variant_x86_64.plugin import X8664Plugin, VariantProperty as XP
from provider_variant_aarch64.plugin import AArch64Plugin, VariantProperty as AP
x, a = X8664Plugin(), AArch64Plugin()
ours = json.loads(sys.argv[1])
print(json.dumps({
    "x86_64": [x.namespace, x.all_features,
               [x.validate_property(XP(x.namespace, f, v)) for f, v in ours["x86_64"]]],
    "aarch64": [a.namespace, a.all_features,
                [a.validate_property(AP(a.namespace, f, v)) for f, v in ours["aarch64"]]],
    "host": x.get_supported_configs(None) and [[c.name, c.values] for c in x.get_supported_configs(None)],
}))
"""


def test_our_property_table_is_the_provider_plugins_vocabulary():
    ours = {
        arch: [
            (feature, value)
            for _ns, feature, values in wheel_variants.all_properties(arch)
            for value in values
        ]
        for arch in (X86, ARM)
    }
    done = subprocess.run(
        [sys.executable, "-c", PLUGIN_TABLE, json.dumps(ours)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    theirs = json.loads(done.stdout)
    for arch in (X86, ARM):
        namespace, plugin_features, valid = theirs[arch]
        provider = wheel_variants.PROVIDERS[arch]
        assert namespace == provider.namespace
        # our features are the plugin's, in the plugin's preference order (the order ranks variants)
        assert provider.features == tuple(f for f in plugin_features if f in provider.features)
        assert all(valid), [p for p, ok in zip(ours[arch], valid, strict=True) if not ok]


def test_on_this_host_our_supported_properties_agree_with_the_x86_plugin():
    host = detect_host()
    if host.arch != X86 or host.unusable:
        pytest.skip("compares with the plugin's archspec view, which ignores OS-disabled features")
    done = subprocess.run(
        [sys.executable, "-c", PLUGIN_TABLE, json.dumps({X86: [], ARM: []})], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    plugin = {name: values for name, values in json.loads(done.stdout)["host"]}
    ours = {feature: values for _ns, feature, values in wheel_variants.supported(X86, host.usable_features)}
    assert ours["level"] == plugin["level"]
    ours_features = {f for f in ours if f != "level"}
    theirs = {f for f in plugin if f in wheel_variants.PROVIDERS[X86].features}
    assert theirs <= ours_features
    # The plugin answers from the features archspec's database lists for the microarchitecture it names,
    # not from the CPU's flags: on a VM that archspec names only by level (x86_64_v4 on a Zen 4 whose model
    # name reads "AMD EPYC") it misses VNNI and BF16. What we add must be just that: on the CPU, not in the
    # model.
    microarch = archspec.cpu.host()
    for feature in ours_features - theirs:
        assert feature in host.usable_features, feature
        assert feature not in microarch, (feature, microarch.name)


def _variantlib_order(arch: str, usable: frozenset[str]) -> list[str]:
    """variantlib's ranking of the index's variants for a CPU with `usable` features."""
    index = VariantsJson(_index_document())
    supported = []
    for namespace, feature, values in wheel_variants.supported(arch, usable):
        config = ProviderConfig(namespace, configs=[VariantFeatureConfig(feature, values, multi_value=False)])
        supported += config.to_list_of_properties()
    ranked = sort_and_filter_supported_variants(
        list(index.variants.values()),
        supported,
        namespace_priorities=index.namespace_priorities,
        filter_values=True,
    )
    return [v.label for v in ranked]


@pytest.mark.parametrize("machine", sorted(EXPECTED_ORDER))
def test_variantlib_picks_the_best_variant_on_recorded_machines(machine):
    host = host_from_inputs(inputs_from_machine_file(MACHINES / f"{machine}.toml"))
    order = _variantlib_order(host.arch, host.usable_features)
    assert order == [*EXPECTED_ORDER[machine], "null"]  # the null variant ranks last, always compatible
    # the same answer as cpubuild's own selection, among the recipes that can be variant wheels
    runnable = [v.recipe.name for v in select(host, load_recipes()).verdicts if v.runnable]
    assert order[0] == next(name for name in runnable if name in EXPECTED_ORDER[machine])


def test_variantlib_resolves_on_this_host_through_the_probe_plugin():
    """get_variants_by_priority runs the plugin in a child process, as an installer would."""
    index = _index_document()
    index["providers"] = {
        X86: {"requires": ["cpubuild"], "plugin-api": "cpubuild.variant_provider:X8664Plugin"},
        ARM: {"requires": ["cpubuild"], "plugin-api": "cpubuild.variant_provider:AArch64Plugin"},
    }
    ranked = [v.label for v in get_variants_by_priority(variants_json=index)]
    host = detect_host()
    assert ranked == _variantlib_order(host.arch, host.usable_features)
    runnable = [v.recipe.name for v in select(host, load_recipes()).verdicts if v.runnable]
    assert ranked[0] == next(name for name in runnable if name != "amx")


def test_the_pypi_plugins_cannot_be_loaded_by_variantlib_0_2():
    """Why the probe plugin exists; when a provider release implements the new API this test says so."""
    from variantlib.errors import PluginError

    with pytest.raises(PluginError, match="missing attributes: get_all_configs"):
        get_variants_by_priority(variants_json=_index_document())
