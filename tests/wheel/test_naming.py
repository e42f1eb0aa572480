"""Wheel names: the portable wheel is plain, a tuned wheel carries a PEP 825 variant label; both parse."""

from __future__ import annotations

import pytest

from cpubuild import naming

PLATFORM = "manylinux_2_34_x86_64"


def test_a_variant_label_follows_the_platform_tag_and_round_trips():
    name = naming.WheelName("cpullm", "0.1.0", "py3", "none", PLATFORM, "avx512_bf16")
    assert name.filename == f"cpullm-0.1.0-py3-none-{PLATFORM}-avx512_bf16.whl"
    assert name.plain_filename == f"cpullm-0.1.0-py3-none-{PLATFORM}.whl"
    assert name.dist_info == "cpullm-0.1.0.dist-info"  # the label is not part of the version
    parsed = naming.WheelName.parse(name.filename)
    assert parsed == name and naming.target_of(parsed) == "avx512_bf16"


def test_the_portable_wheel_is_a_plain_wheel():
    parsed = naming.WheelName.parse(f"cpullm-0.1.0-py3-none-{PLATFORM}.whl")
    assert parsed.variant is None and naming.target_of(parsed) is None
    assert parsed.filename == parsed.plain_filename


def test_a_build_tag_is_not_taken_for_a_variant_label():
    with_build = naming.WheelName.parse(f"cpullm-0.1.0-1-py3-none-{PLATFORM}.whl")
    assert (with_build.python, with_build.platform, with_build.variant) == ("py3", PLATFORM, None)
    both = naming.WheelName.parse(f"cpullm-0.1.0-1-py3-none-{PLATFORM}-avx2.whl")
    assert (both.python, both.platform, both.variant) == ("py3", PLATFORM, "avx2")


@pytest.mark.parametrize(
    "filename",
    ["cpullm-0.1.0.tar.gz", "cpullm-0.1.0-py3-none.whl", f"cpullm-0.1.0-x-py3-none-{PLATFORM}-avx2.whl"],
)
def test_what_is_not_a_wheel_name_is_refused(filename):
    with pytest.raises(ValueError, match="is not a wheel file name"):
        naming.WheelName.parse(filename)


def test_names_are_escaped_for_files_and_normalized_for_index_urls():
    assert naming.escape("cpullm-avx512.bf16") == "cpullm_avx512_bf16"
    assert naming.project("CPULLM_x.y") == "cpullm-x-y"


def test_the_removed_name_styles_are_refused_with_the_reason():
    import subprocess
    import sys

    for command in ("wheel", "finalize"):
        args = ["x.whl"] if command == "finalize" else []
        done = subprocess.run(
            [sys.executable, "-m", "cpubuild.cli", command, *args, "--isa", "avx2", "--name-style", "local"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert "--name-style (and its environment variable) was removed" in done.stderr
        assert "plain pip installed +generic" in done.stderr and "PEP 825 variant wheel" in done.stderr
