"""The deterministic archive: same files in -> same bytes out, whatever the files' times and order."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

from cpubuild import reproducible


def _tree(root: Path, mtime: int) -> Path:
    files = {
        "cpullm/__init__.py": b"x = 1\n",
        "cpullm/_lib/libcpullm_probe.so": b"\x7fELF fake",
        "cpullm-0.1.0.dist-info/METADATA": b"Name: cpullm\nVersion: 0.1.0\n",
        "cpullm-0.1.0.dist-info/WHEEL": b"Tag: py3-none-any\n",
        "cpullm-0.1.0.dist-info/RECORD": b"stale,,\n",
    }
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, (mtime, mtime))
    return root


def test_archive_is_byte_identical_regardless_of_mtimes(tmp_path):
    a = reproducible.write_wheel(_tree(tmp_path / "a", 1_000_000_000), "cpullm-0.1.0.dist-info",
                                 tmp_path / "a.whl", 1_700_000_000)  # fmt: skip
    b = reproducible.write_wheel(_tree(tmp_path / "b", 1_600_000_000), "cpullm-0.1.0.dist-info",
                                 tmp_path / "b.whl", 1_700_000_000)  # fmt: skip
    assert a.read_bytes() == b.read_bytes()
    dist_info = "cpullm-0.1.0.dist-info"
    c = reproducible.write_wheel(_tree(tmp_path / "c", 1), dist_info, tmp_path / "c.whl", 1_800_000_000)
    assert c.read_bytes() != a.read_bytes()  # the source date is the only time recorded


def test_archive_order_permissions_and_record(tmp_path):
    out = reproducible.write_wheel(_tree(tmp_path / "t", 5), "cpullm-0.1.0.dist-info", tmp_path / "t.whl", 0)
    with zipfile.ZipFile(out) as archive:
        infos = archive.infolist()
        names = [i.filename for i in infos]
        assert names[-1] == "cpullm-0.1.0.dist-info/RECORD"
        assert names.index("cpullm/__init__.py") < names.index("cpullm-0.1.0.dist-info/METADATA")
        assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}  # clamped to the zip epoch
        modes = {i.filename: i.external_attr >> 16 for i in infos}
        assert modes["cpullm/_lib/libcpullm_probe.so"] == 0o100755
        assert modes["cpullm/__init__.py"] == 0o100644
        record = archive.read("cpullm-0.1.0.dist-info/RECORD").decode().splitlines()
        for line in record[:-1]:
            name, digest, size = line.rsplit(",", 2)
            data = archive.read(name)
            expected = reproducible._record_hash(data)
            assert (digest, int(size)) == (expected, len(data))
        assert record[-1] == "cpullm-0.1.0.dist-info/RECORD,,"
        assert "stale" not in "".join(record)


def test_leaked_paths_are_found(tmp_path):
    tree = tmp_path / "tree"
    (tree / "pkg").mkdir(parents=True)
    (tree / "pkg" / "a.so").write_bytes(b"abc/home/builder/src/x.cc\0")
    (tree / "pkg" / "b.so").write_bytes(b"clean")
    assert reproducible.leaked_paths(tree, ["/home/builder/src", "/"]) == [("pkg/a.so", "/home/builder/src")]
