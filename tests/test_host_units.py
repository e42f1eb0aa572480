"""Unit tests of the probe's parts: cpuinfo parsing, XCR0 rules, HWCAP decoding, psABI levels."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cpubuild.host import cpuinfo, hwcap, x86_state
from cpubuild.host.detect import ProbeError, ProbeInputs, host_from_inputs, inputs_from_machine_file
from cpubuild.host.uarch import psabi_level
from cpubuild.host.x86_state import AmxPermission

MACHINES = Path(__file__).parent / "fixtures" / "cpuinfo"
KERNEL_HWCAP_H = Path("/usr/aarch64-linux-gnu/include/asm/hwcap.h")


def test_first_block_stops_at_the_second_processor():
    text = "processor\t: 0\nflags\t\t: sse avx\n\nprocessor\t: 1\nflags\t\t: sse\n"
    fields = cpuinfo.first_block(text)
    assert cpuinfo.feature_flags(fields, "x86_64") == {"sse", "avx"}
    assert cpuinfo.first_block("processor: 0\nflags: a\nprocessor: 1\nflags: b\n")["flags"] == "a"


def test_wrapped_features_lines_are_merged():
    fields = cpuinfo.first_block("processor\t: 0\nFeatures\t: fp asimd\nFeatures\t: asimddp sve\n")
    assert cpuinfo.feature_flags(fields, "aarch64") == {"fp", "asimd", "asimddp", "sve"}


@pytest.mark.parametrize(
    ("feature", "mask"),
    [("avx", 0x6), ("fma", 0x6), ("avx_vnni", 0x6), ("avx512f", 0xE6), ("avx512_bf16", 0xE6),
     ("amx_tile", 0x60000), ("sse4_2", None), ("bmi2", None)],
)  # fmt: skip
def test_required_xcr0_state(feature, mask):
    needed = x86_state.required_state(feature)
    assert (needed[0] if needed else None) == mask


def x86_host(flags: str, xcr0: int | None, permission: AmxPermission | None = None):
    text = f"processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: {flags}\n"
    return host_from_inputs(
        ProbeInputs(
            "x86_64", text, xcr0=xcr0, amx_permission=permission, affinity=1, cgroup_root=Path("/nonexistent")
        )
    )


def test_avx_unusable_without_ymm_state():
    host = x86_host("sse sse2 avx avx2 fma f16c", xcr0=0x3)
    assert set(host.unusable) == {"avx", "avx2", "fma", "f16c"}
    assert all("not enabled by the OS" in reason for reason in host.unusable.values())
    assert "XCR0=0x3" in host.unusable["avx"]


def test_amx_needs_tile_state_before_permission():
    host = x86_host("avx512f amx_tile amx_int8", xcr0=0xE7, permission=AmxPermission(True, "granted"))
    assert set(host.unusable) == {"amx_tile", "amx_int8"}
    assert "AMX tile state (XCR0 bits 17, 18)" in host.unusable["amx_tile"]
    assert "avx512f" in host.usable_features


def test_unknown_xcr0_trusts_the_kernel_flags_and_says_so():
    host = x86_host("avx avx2 avx512f", xcr0=None)
    assert host.unusable == {}
    assert any("XCR0 was not read" in note for note in host.notes)


def test_amx_permission_from_fixture_text():
    assert AmxPermission.from_text("granted").granted
    refused = AmxPermission.from_text("EPERM")
    assert not refused.granted and refused.detail == "EPERM (Operation not permitted)"


@pytest.mark.parametrize(
    ("flags", "level"),
    [
        ("sse sse2", "x86-64-v1"),
        ("cx16 lahf_lm popcnt pni sse4_1 sse4_2 ssse3", "x86-64-v2"),
        (
            "cx16 lahf_lm popcnt pni sse4_1 sse4_2 ssse3 avx avx2 bmi1 bmi2 f16c fma abm movbe xsave",
            "x86-64-v3",
        ),
        # v4 features without v3 (e.g. no movbe) stay at v2: levels are cumulative.
        (
            "cx16 lahf_lm popcnt pni sse4_1 sse4_2 ssse3 avx512f avx512bw avx512cd avx512dq avx512vl",
            "x86-64-v2",
        ),
    ],
)
def test_psabi_levels(flags, level):
    assert psabi_level(frozenset(flags.split())) == level


def test_hwcap_round_trip_matches_fixture_features():
    for machine in ("graviton2", "graviton3"):
        inputs = inputs_from_machine_file(MACHINES / f"{machine}.toml")
        listed = cpuinfo.feature_flags(cpuinfo.first_block(inputs.cpuinfo_text), "aarch64")
        assert hwcap.decode_hwcaps(inputs.hwcap or 0, inputs.hwcap2 or 0) == listed
        assert hwcap.encode_hwcaps(listed) == (inputs.hwcap, inputs.hwcap2)


@pytest.mark.skipif(
    not KERNEL_HWCAP_H.exists(), reason="the aarch64 kernel headers (g++-aarch64-linux-gnu) are absent"
)
def test_hwcap_bits_match_the_kernel_uapi_header():
    defines = re.findall(r"#define\s+HWCAP(2?)_(\w+)\s+\(1U?L?\s*<<\s*(\d+)\)", KERNEL_HWCAP_H.read_text())
    assert len(defines) > 40
    for second, name, bit in defines:
        table = hwcap.HWCAP2_BITS if second else hwcap.HWCAP_BITS
        assert table[int(bit)] == name.lower().replace("_", ""), name


def test_unsupported_architecture_is_a_clear_error():
    with pytest.raises(ProbeError, match="x86_64 and aarch64"):
        host_from_inputs(ProbeInputs("riscv64", ""))


def test_machine_file_rejects_unknown_keys(tmp_path):
    (tmp_path / "m.toml").write_text('arch = "x86_64"\ncpuinfo = "x"\nxcr00 = 7\n')
    with pytest.raises(ProbeError, match=r"unknown key.*xcr00"):
        inputs_from_machine_file(tmp_path / "m.toml")


QEMU_CASES = [("Haswell", "avx2", "0x7"), ("Nehalem", "generic", "0x0")]


@pytest.mark.qemu
@pytest.mark.slow
@pytest.mark.parametrize(("cpu", "best", "xcr0"), QEMU_CASES)
def test_live_probe_under_qemu_reads_the_emulated_xcr0(cpu, best, xcr0):
    """Under qemu-x86_64 -cpu Haswell/Nehalem, /proc/cpuinfo is still this host's (with AVX-512),
    but CPUID/XGETBV are emulated: the live XCR0 check alone must keep AVX-512 (and AVX) off."""
    import json
    import platform
    import shutil
    import subprocess
    import sys

    if shutil.which("qemu-x86_64") is None or platform.machine() != "x86_64":
        pytest.skip("needs qemu-x86_64 on an x86-64 host")
    if "avx512f" not in cpuinfo.feature_flags(cpuinfo.first_block(cpuinfo.read_cpuinfo()), "x86_64"):
        pytest.skip("the host's /proc/cpuinfo has no AVX-512 to hide")
    host_flags = cpuinfo.feature_flags(cpuinfo.first_block(cpuinfo.read_cpuinfo()), "x86_64")
    if best == "avx2" and "avx_vnni" in host_flags:
        # AVX-VNNI needs only the YMM state, which Haswell's XCR0 has: the XCR0 check cannot hide this
        # host's flag (a real Haswell's /proc/cpuinfo would not list it), so avx_vnni is the answer here.
        best = "avx_vnni"
    command = ["qemu-x86_64", "-cpu", cpu, sys.executable, "-m", "cpubuild.cli", "detect", "--json"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=True)
    document = json.loads(done.stdout)
    assert document["host"]["xcr0"] == xcr0
    assert document["best"] == best
    reasons = {item["name"]: item["reason"] for item in document["features"]["unusable"]}
    assert reasons["avx512f"].startswith("not enabled by the OS")


AUXV_PROGRAM = """#include <stdio.h>
#include <sys/auxv.h>
int main(void) { printf("%#lx %#lx\\n", getauxval(AT_HWCAP), getauxval(AT_HWCAP2)); return 0; }
"""


@pytest.fixture(scope="module")
def auxv_binary(tmp_path_factory):
    """A static aarch64 program printing its AT_HWCAP / AT_HWCAP2, built with the cross compiler."""
    import shutil
    import subprocess

    if shutil.which("aarch64-linux-gnu-gcc") is None or shutil.which("qemu-aarch64") is None:
        pytest.skip("needs aarch64-linux-gnu-gcc and qemu-aarch64")
    folder = tmp_path_factory.mktemp("auxv")
    (folder / "auxv.c").write_text(AUXV_PROGRAM)
    subprocess.run(
        ["aarch64-linux-gnu-gcc", "-static", "-O1", "auxv.c", "-o", "auxv"],
        cwd=folder,
        check=True,
        timeout=120,
    )
    return folder / "auxv"


@pytest.mark.qemu
@pytest.mark.parametrize(
    ("cpu", "best"), [("cortex-a72", "armv8"), ("neoverse-n1", "dotprod"), ("max", "sve")]
)
def test_hwcaps_from_qemu_cpus_select_the_expected_recipe(auxv_binary, cpu, best):
    """Real getauxval() values from qemu-aarch64's CPU models, decoded with the uapi bit table."""
    import subprocess

    from cpubuild.recipes import load_recipes
    from cpubuild.selection import select

    done = subprocess.run(
        ["qemu-aarch64", "-cpu", cpu, str(auxv_binary)], capture_output=True, text=True, check=True
    )
    caps, caps2 = (int(word, 16) for word in done.stdout.split())
    # qemu-user shows the x86 host's /proc/cpuinfo, which has no Features line: HWCAP alone decides.
    host = host_from_inputs(ProbeInputs("aarch64", "", hwcap=caps, hwcap2=caps2, affinity=1))
    selection = select(host, load_recipes())
    assert selection.best is not None and selection.best.name == best
    assert "asimd" in host.usable_features
