"""Small wheels with real metadata (METADATA, WHEEL, RECORD, PEP 825 variant.json) and no engine inside.

Enough for the index, pip's choice among files and variant resolution; `cpullm/__init__.py` records which
wheel it came from (BUILT_AS), so a test can tell which one pip installed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import platform
import zipfile
from pathlib import Path

from cpubuild import wheel_variants
from cpubuild.naming import WheelName

HOST_PLATFORM = f"linux_{platform.machine()}"


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def fake_wheel(
    folder: Path,
    *,
    recipe: str | None = None,
    arch: str = "x86_64",
    features: tuple[str, ...] = (),
    version: str = "0.1.0",
    plat: str = HOST_PLATFORM,
    variant_json: object | None = None,
    metadata_version: str | None = None,
) -> Path:
    """The portable wheel (recipe None) or the variant wheel of a recipe needing `features` on `arch`."""
    label = None
    files: dict[str, bytes] = {}
    name = WheelName("cpullm", version, "py3", "none", plat)
    if recipe is not None:
        props = wheel_variants.properties(arch, features)
        label = wheel_variants.label_for(recipe, props)
        name = WheelName("cpullm", version, "py3", "none", plat, label)
        doc = wheel_variants.document({label: props}) if variant_json is None else variant_json
        files[f"{name.dist_info}/variant.json"] = json.dumps(doc).encode()
    files["cpullm/__init__.py"] = f"BUILT_AS = {label or 'portable'!r}\n".encode()
    files[f"{name.dist_info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: cpullm\nVersion: {metadata_version or version}\n"
        "Requires-Python: >=3.10\n\n".encode()
    )
    files[f"{name.dist_info}/WHEEL"] = (
        f"Wheel-Version: 1.0\nGenerator: fake_wheels\nRoot-Is-Purelib: false\nTag: py3-none-{plat}\n".encode()
    )
    record = [f"{n},{_record_hash(d)},{len(d)}" for n, d in files.items()]
    files[f"{name.dist_info}/RECORD"] = ("\n".join([*record, f"{name.dist_info}/RECORD,,"]) + "\n").encode()
    path = folder / name.filename
    with zipfile.ZipFile(path, "w") as archive:
        for member, data in files.items():
            archive.writestr(member, data)
    return path
