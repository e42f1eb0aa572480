"""Wheel names: local labels, per-target distributions, the portable wheel, and parsing them back."""

from __future__ import annotations

import pytest

from cpubuild import naming


def test_local_style_labels_the_version_and_round_trips():
    dist, version = naming.identity("0.1.0", "avx512_bf16", "local")
    assert (dist, version) == ("cpullm", "0.1.0+avx512.bf16")
    name = naming.WheelName(dist, version, "py3", "none", "manylinux_2_34_x86_64")
    assert name.filename == "cpullm-0.1.0+avx512.bf16-py3-none-manylinux_2_34_x86_64.whl"
    assert name.dist_info == "cpullm-0.1.0+avx512.bf16.dist-info"
    assert naming.target_of(naming.WheelName.parse(name.filename)) == "avx512_bf16"


def test_dist_style_names_a_distribution_per_target():
    dist, version = naming.identity("0.1.0", "avx512", "dist")
    assert (dist, version) == ("cpullm_avx512", "0.1.0")
    parsed = naming.WheelName.parse("cpullm_avx512-0.1.0-py3-none-manylinux_2_34_x86_64.whl")
    assert parsed.distribution == "cpullm_avx512"
    assert naming.target_of(parsed) == "avx512"


@pytest.mark.parametrize("style", naming.NAME_STYLES)
def test_portable_wheel_has_no_label(style):
    assert naming.identity("0.1.0", "all", style) == ("cpullm", "0.1.0")
    assert naming.target_of(naming.WheelName.parse("cpullm-0.1.0-py3-none-linux_x86_64.whl")) is None


def test_bad_names_are_refused():
    with pytest.raises(ValueError, match="not a wheel file name"):
        naming.WheelName.parse("cpullm-0.1.0.tar.gz")
    with pytest.raises(ValueError, match="unknown name style"):
        naming.identity("0.1.0", "avx2", "fancy")
    assert naming.escape("cpullm-avx512.bf16") == "cpullm_avx512_bf16"
