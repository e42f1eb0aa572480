"""Detection and selection on recorded machines (tests/fixtures/cpuinfo/*.toml): exact answers."""

from __future__ import annotations

from pathlib import Path

import pytest

from cpubuild.host.detect import HostInfo, host_from_inputs, inputs_from_machine_file
from cpubuild.recipes import load_recipes
from cpubuild.selection import Selection, select

MACHINES = Path(__file__).parent / "fixtures" / "cpuinfo"
AVX512 = ["avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"]
AMX = ["amx_tile", "amx_int8", "amx_bf16"]
ZMM_REASON = "not enabled by the OS: XCR0=0x7 lacks the AVX-512 opmask/ZMM state (XCR0 bits 1, 2, 5, 6, 7)"
AMX_REFUSED = (
    "the OS refused AMX tile permission: arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) "
    "failed with EPERM (Operation not permitted)"
)


def probe(machine: str) -> tuple[HostInfo, Selection]:
    host = host_from_inputs(inputs_from_machine_file(MACHINES / f"{machine}.toml"))
    return host, select(host, load_recipes())


def missing_by_recipe(selection: Selection) -> dict[str, list[str]]:
    return {v.recipe.name: list(v.missing) for v in selection.verdicts if v.missing}


def unusable_by_recipe(selection: Selection) -> dict[str, list[tuple[str, str]]]:
    return {v.recipe.name: list(v.unusable) for v in selection.verdicts if v.unusable}


# machine: (best, microarchitecture, psABI level, {recipe: missing features})
EXPECTED_X86 = {
    "haswell": (
        "avx2", "haswell", "x86-64-v3",
        {
            "avx_vnni": ["avx_vnni"],
            "avx512": AVX512,
            "avx512_vnni": [*AVX512, "avx512_vnni"],
            "avx512_bf16": [*AVX512, "avx512_vnni", "avx512_bf16"],
            "amx": [*AVX512, "avx512_vnni", "avx512_bf16", *AMX],
        },
    ),
    "skylake_sp": (
        "avx512", "skylake_avx512", "x86-64-v4",
        {
            "avx_vnni": ["avx_vnni"],
            "avx512_vnni": ["avx512_vnni"],
            "avx512_bf16": ["avx512_vnni", "avx512_bf16"],
            "amx": ["avx512_vnni", "avx512_bf16", *AMX],
        },
    ),
    "icelake_sp": (
        "avx512_vnni", "icelake", "x86-64-v4",
        {"avx_vnni": ["avx_vnni"], "avx512_bf16": ["avx512_bf16"], "amx": ["avx512_bf16", *AMX]},
    ),
    "sapphire_rapids": ("amx", "sapphirerapids", "x86-64-v4", {}),
    "zen4": ("avx512_bf16", "zen4", "x86-64-v4", {"avx_vnni": ["avx_vnni"], "amx": AMX}),
    "this_host": ("avx512_bf16", "x86_64_v4", "x86-64-v4", {"amx": AMX}),
}  # fmt: skip


@pytest.mark.parametrize("machine", sorted(EXPECTED_X86))
def test_x86_machine_best_recipe_and_why_not(machine):
    best, microarchitecture, level, missing = EXPECTED_X86[machine]
    host, selection = probe(machine)
    assert selection.best is not None and selection.best.name == best
    assert host.microarchitecture == microarchitecture
    assert host.psabi_level == level
    assert missing_by_recipe(selection) == missing
    assert unusable_by_recipe(selection) == {}
    assert host.unusable == {}
    runnable = [v.recipe.name for v in selection.verdicts if v.runnable]
    assert runnable[0] == best  # verdicts are ordered best first


def test_sapphire_rapids_uses_amx_with_permission():
    host, _ = probe("sapphire_rapids")
    assert {"amx_tile", "amx_int8", "amx_bf16", "avx512_fp16"} <= set(host.known_usable())
    assert host.amx_permission is not None and host.amx_permission.granted


def test_avx512_in_cpuid_but_not_enabled_by_the_os_falls_back_to_avx2():
    host, selection = probe("no_zmm_state")
    assert selection.best is not None and selection.best.name == "avx2"
    assert host.psabi_level == "x86-64-v3"
    assert host.microarchitecture == "skylake_avx512"  # the hardware is still Skylake-SP
    for feature in AVX512:
        assert feature in host.cpu_features
        assert host.unusable[feature] == ZMM_REASON
    assert missing_by_recipe(selection) == {
        "avx_vnni": ["avx_vnni"],
        "avx512_vnni": ["avx512_vnni"],
        "avx512_bf16": ["avx512_vnni", "avx512_bf16"],
        "amx": ["avx512_vnni", "avx512_bf16", *AMX],
    }
    zmm = [(feature, ZMM_REASON) for feature in AVX512]
    assert unusable_by_recipe(selection) == {
        "avx512": zmm,
        "avx512_vnni": zmm,
        "avx512_bf16": zmm,
        "amx": zmm,
    }
    assert "are present but not enabled by the OS" in selection.verdict("avx512").why_not()


def test_vnni_without_avx512_state_picks_avx_vnni():
    host, selection = probe("zen5_no_zmm_state")
    assert selection.best is not None and selection.best.name == "avx_vnni"
    assert host.psabi_level == "x86-64-v3"
    assert "avx_vnni" in host.known_usable() and "avx512_vnni" in host.unusable
    runnable = [v.recipe.name for v in selection.verdicts if v.runnable]
    assert runnable == ["avx_vnni", "avx2", "generic"]


def test_amx_permission_refused_falls_back_to_avx512_bf16():
    host, selection = probe("amx_refused")
    assert selection.best is not None and selection.best.name == "avx512_bf16"
    assert missing_by_recipe(selection) == {}
    assert unusable_by_recipe(selection) == {"amx": [(feature, AMX_REFUSED) for feature in AMX]}
    assert {name for name in host.unusable} == {"amx_tile", "amx_int8", "amx_bf16"}
    assert "refused AMX tile permission" in selection.verdict("amx").why_not()
    assert "EPERM" in selection.verdict("amx").why_not()


def test_graviton2_is_dotprod():
    host, selection = probe("graviton2")
    assert selection.best is not None and selection.best.name == "dotprod"
    assert (host.arch, host.vendor, host.model_name) == ("aarch64", "ARM", "Neoverse N1")
    assert host.microarchitecture == "neoverse_n1"
    assert host.psabi_level is None
    assert host.known_usable() == ["asimd", "asimddp", "asimdhp", "fphp"]
    assert missing_by_recipe(selection) == {"i8mm": ["i8mm", "bf16"], "sve": ["i8mm", "bf16", "sve"]}
    assert unusable_by_recipe(selection) == {}


def test_graviton3_is_sve():
    host, selection = probe("graviton3")
    assert selection.best is not None and selection.best.name == "sve"
    assert (host.model_name, host.microarchitecture) == ("Neoverse V1", "neoverse_v1")
    assert host.known_usable() == ["asimd", "asimddp", "asimdhp", "fphp", "bf16", "i8mm", "sve"]
    assert host.known_missing() == ["sve2"]
    assert missing_by_recipe(selection) == {}
    assert unusable_by_recipe(selection) == {}


def test_aarch64_feature_listed_but_not_in_hwcap_is_unusable(tmp_path):
    # The Graviton 3 text, but a process whose AT_HWCAP lacks SVE (bit 22).
    machine = (MACHINES / "graviton3.toml").read_text().replace("0xdfffffff", hex(0xDFFFFFFF & ~(1 << 22)))
    (tmp_path / "graviton3.cpuinfo").write_text((MACHINES / "graviton3.cpuinfo").read_text())
    (tmp_path / "m.toml").write_text(machine)
    host = host_from_inputs(inputs_from_machine_file(tmp_path / "m.toml"))
    selection = select(host, load_recipes())
    assert selection.best is not None and selection.best.name == "i8mm"
    assert list(host.unusable) == ["sve"]
    assert "AT_HWCAP" in host.unusable["sve"]


def test_every_fixture_is_one_processor_block():
    for path in MACHINES.glob("*.cpuinfo"):
        assert path.read_text().count("processor\t:") == 1, path.name
