"""`cpubuild index`: a static simple repository (PEP 503 HTML + PEP 691 JSON) for a folder of wheels.

Layout under OUT: ``simple/index.html`` and ``simple/index.json`` list the projects;
``simple/<project>/`` holds the project's page (``index.html``, ``index.json``), its wheels and, for
each version with variant wheels, PEP 825's ``{name}-{version}-variants.json``, linked from the page
like the wheels (with its sha256). Any static file server can serve OUT: pip asks for
``/simple/<project>/`` and reads the HTML; a server that maps the PEP 691 media type to ``index.json``
serves the JSON too. Plain pip skips the variant wheels (their names are not PEP 427 names) and installs
the portable wheel; a variant-aware installer reads the variants.json and picks the best variant.
"""

from __future__ import annotations

import hashlib
import html
import json
import shutil
import zipfile
from dataclasses import dataclass, field
from email.parser import HeaderParser
from pathlib import Path
from typing import Any, Final

from packaging.utils import canonicalize_version

from cpubuild import naming, wheel_variants

MARKER: Final = ".cpubuild-index"  # in OUT/simple: a folder this command may replace
API_VERSION: Final = "1.1"  # PEP 691 JSON with PEP 700's versions and sizes
JSON_MEDIA_TYPE: Final = "application/vnd.pypi.simple.v1+json"
_MAX_MEMBER_BYTES: Final = 1 << 20  # METADATA and variant.json are a few KiB; refuse to inflate more


class IndexBuildError(Exception):
    """The wheelhouse cannot become an index; the message says why and what to do."""


@dataclass(frozen=True)
class IndexedFile:
    filename: str
    sha256: str
    size: int
    version: str
    variant: str | None = None  # the variant label of a variant wheel
    requires_python: str | None = None
    is_variants_json: bool = False


@dataclass
class IndexResult:
    out: Path
    projects: dict[str, list[IndexedFile]] = field(default_factory=dict)
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)  # variants.json name -> document
    validated_with: str | None = None

    def as_json(self) -> dict[str, Any]:
        def entry(f: IndexedFile) -> dict[str, Any]:
            return {"file": f.filename, "sha256": f.sha256, "size": f.size, "version": f.version,
                    "variant": f.variant, "variants_json": f.is_variants_json}  # fmt: skip

        return {
            "index": str(self.out / "simple"),
            "projects": {project: [entry(f) for f in files] for project, files in self.projects.items()},
            "variants_json": {name: sorted(doc["variants"]) for name, doc in self.variants.items()},
            "validated_with": self.validated_with,
        }


@dataclass(frozen=True)
class _Wheel:
    path: Path
    name: naming.WheelName
    project: str
    version: str
    requires_python: str | None
    variant_doc: dict[str, Any] | None


def _member(archive: zipfile.ZipFile, member: str, wheel: Path) -> bytes:
    if archive.getinfo(member).file_size > _MAX_MEMBER_BYTES:
        raise IndexBuildError(
            f"{wheel.name}: {member} is larger than {_MAX_MEMBER_BYTES} bytes; not a wheel we index"
        )
    return archive.read(member)


def _read_wheel(path: Path) -> _Wheel:
    try:
        name = naming.WheelName.parse(path.name)
    except ValueError as exc:
        raise IndexBuildError(f"{exc}; rename or remove it from the wheelhouse") from None
    dist_info = name.dist_info
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if f"{dist_info}/METADATA" not in names:
                raise IndexBuildError(
                    f"{path.name} has no {dist_info}/METADATA: it is not a wheel of that name"
                )
            metadata = HeaderParser().parsestr(_member(archive, f"{dist_info}/METADATA", path).decode())
            variant_doc = None
            if name.variant is not None:
                member = f"{dist_info}/{wheel_variants.VARIANT_JSON}"
                if member not in names:
                    raise IndexBuildError(
                        f"{path.name} has a variant label but no {member} (PEP 825); rebuild it with cpubuild"
                    )
                variant_doc = json.loads(_member(archive, member, path))
    except (OSError, zipfile.BadZipFile, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IndexBuildError(
            f"{path.name} cannot be read as a wheel ({exc}); rebuild or remove it"
        ) from None
    if naming.project(metadata.get("Name", "")) != naming.project(name.distribution):
        raise IndexBuildError(
            f"{path.name}: its METADATA names {metadata.get('Name')!r}, not {name.distribution!r}"
        )
    if canonicalize_version(metadata.get("Version", "")) != canonicalize_version(name.version):
        raise IndexBuildError(
            f"{path.name}: its METADATA says version {metadata.get('Version')!r}, its name {name.version!r}"
        )
    if variant_doc is not None:
        try:
            wheel_variants.check(variant_doc, expected_label=name.variant)
        except wheel_variants.VariantError as exc:
            raise IndexBuildError(f"{path.name}: {exc}") from None
    return _Wheel(
        path,
        name,
        naming.project(name.distribution),
        name.version,
        metadata.get("Requires-Python"),
        variant_doc,
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _indexed(path: Path, version: str, **extra: Any) -> IndexedFile:
    return IndexedFile(path.name, _sha256(path), path.stat().st_size, version, **extra)


def _html_page(title: str, links: list[tuple[str, str, dict[str, str]]]) -> str:
    """A PEP 503 page: (href, text, extra attributes) per link."""
    rows = []
    for href, text, attributes in links:
        extra = "".join(f' {key}="{html.escape(value)}"' for key, value in attributes.items())
        rows.append(f'    <a href="{html.escape(href)}"{extra}>{html.escape(text)}</a><br/>')
    return (
        "<!DOCTYPE html>\n<html>\n  <head>\n"
        f'    <meta name="pypi:repository-version" content="{API_VERSION}">\n'
        f"    <title>{html.escape(title)}</title>\n  </head>\n  <body>\n"
        f"    <h1>{html.escape(title)}</h1>\n" + "\n".join(rows) + "\n  </body>\n</html>\n"
    )


def _write_project(folder: Path, project: str, files: list[IndexedFile]) -> None:
    links = []
    for f in files:
        attributes = {"data-requires-python": f.requires_python} if f.requires_python else {}
        links.append((f"{f.filename}#sha256={f.sha256}", f.filename, attributes))
    (folder / "index.html").write_text(_html_page(f"Links for {project}", links))
    document = {
        "meta": {"api-version": API_VERSION},
        "name": project,
        "versions": sorted({f.version for f in files}),
        "files": [
            {"filename": f.filename, "url": f.filename, "hashes": {"sha256": f.sha256}, "size": f.size,
             **({"requires-python": f.requires_python} if f.requires_python else {})}
            for f in files
        ],
    }  # fmt: skip
    (folder / "index.json").write_text(json.dumps(document, indent=2) + "\n")


def _prepare(out: Path) -> Path:
    """OUT/simple, emptied if an earlier run of this command wrote it; refused if something else did."""
    simple = out / "simple"
    if simple.exists():
        if not (simple / MARKER).is_file():
            raise IndexBuildError(
                f"{simple} exists and was not written by `cpubuild index`; choose another --out or remove it"
            )
        shutil.rmtree(simple)
    simple.mkdir(parents=True)
    (simple / MARKER).write_text("written by `cpubuild index`; the next run replaces this folder\n")
    return simple


def build_index(wheelhouse: Path, out: Path) -> IndexResult:
    """Write the simple index of every wheel in `wheelhouse` under `out`/simple."""
    if not wheelhouse.is_dir():
        raise IndexBuildError(f"{wheelhouse} is not a folder; pass the folder `cpubuild wheel --out` wrote")
    paths = sorted(p for p in wheelhouse.glob("*.whl") if p.is_file())
    if not paths:
        raise IndexBuildError(
            f"{wheelhouse} holds no wheels; build some with `cpubuild wheel --isa ... --out {wheelhouse}`"
        )
    wheels = [_read_wheel(p) for p in paths]
    # One variants.json per (project, version) that has variant wheels, merged by PEP 825's rules.
    per_release: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for w in wheels:
        if w.variant_doc is not None:
            per_release.setdefault((w.project, w.version), {})[w.path.name] = w.variant_doc
    result = IndexResult(out)
    merged: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
    for (project, version), docs in sorted(per_release.items()):
        try:
            doc = wheel_variants.merge(docs)
            result.validated_with = wheel_variants.validate_with_variantlib(doc)
        except wheel_variants.VariantError as exc:
            raise IndexBuildError(f"the variant wheels of {project} {version} disagree: {exc}") from None
        filename = f"{naming.escape(project)}-{version}-variants.json"
        merged[(project, version)] = (filename, doc)
        result.variants[filename] = doc
    simple = _prepare(out)
    for project in sorted({w.project for w in wheels}):
        folder = simple / project
        folder.mkdir()
        files = []
        for w in (w for w in wheels if w.project == project):
            shutil.copyfile(w.path, folder / w.path.name)
            files.append(_indexed(folder / w.path.name, w.version, variant=w.name.variant,
                                  requires_python=w.requires_python))  # fmt: skip
        for (owner, version), (filename, doc) in merged.items():
            if owner == project:
                (folder / filename).write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
                files.append(_indexed(folder / filename, version, is_variants_json=True))
        _write_project(folder, project, files)
        result.projects[project] = files
    root_links = [(f"{project}/", project, {}) for project in result.projects]
    (simple / "index.html").write_text(_html_page("Simple index", root_links))
    root = {"meta": {"api-version": API_VERSION}, "projects": [{"name": p} for p in result.projects]}
    (simple / "index.json").write_text(json.dumps(root, indent=2) + "\n")
    return result
