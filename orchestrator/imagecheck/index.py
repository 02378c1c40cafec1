"""Resolution of pins against a package index through the simple API (PEP 691 JSON, PEP 503 HTML fallback):
one request per project, never a wheel download."""

from __future__ import annotations

import posixpath
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import requests
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

from orchestrator.imagecheck.findings import ERROR, PYPI, WARNING, Finding, Pin


@dataclass(frozen=True)
class IndexFile:
    filename: str
    yanked: str | None  # the reason ("" when none given), None when not yanked
    requires_python: str | None


@dataclass(frozen=True)
class ProjectPage:
    files: tuple[IndexFile, ...] = ()
    missing: bool = False
    unreachable: str | None = None


class _Anchors(HTMLParser):
    def __init__(self, base: str) -> None:
        super().__init__()
        self.base, self.files = base, []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "a" and a.get("href"):
            name = posixpath.basename(urlsplit(urljoin(self.base, a["href"])).path)
            yanked = a["data-yanked"] or "" if "data-yanked" in a else None
            self.files.append(IndexFile(name, yanked, a.get("data-requires-python")))


def fetch_project(index: str, name: str, timeout: float = 20) -> ProjectPage:
    """One project's file list from a PEP 691 (JSON) or PEP 503 (HTML) simple index."""
    url = urljoin(index.rstrip("/") + "/", f"{name}/")
    try:
        resp = requests.get(url, timeout=timeout, headers={
            "Accept": "application/vnd.pypi.simple.v1+json, text/html;q=0.1"})
    except requests.RequestException as exc:
        inner = exc.args[0] if exc.args and isinstance(exc.args[0], Exception) else exc
        inner = getattr(inner, "reason", None) or inner  # urllib3's MaxRetryError wraps the socket-level cause
        text = re.sub(r"<[^>]*>:? ?", "", str(inner))  # drop object reprs such as <HTTPSConnection object at 0x..>
        return ProjectPage(unreachable=f"{type(inner).__name__}: {text}"[:160])
    if resp.status_code == 404:
        return ProjectPage(missing=True)
    if resp.status_code != 200:
        return ProjectPage(unreachable=f"HTTP {resp.status_code}")
    if "json" in resp.headers.get("Content-Type", ""):
        files = []
        for f in resp.json().get("files", []):
            y = f.get("yanked", False)
            files.append(IndexFile(f["filename"], (y if isinstance(y, str) else "") if y else None,
                                   f.get("requires-python")))
        return ProjectPage(tuple(files))
    parser = _Anchors(url)
    parser.feed(resp.text)
    return ProjectPage(tuple(parser.files))


def target_tags(python: str, glibc: tuple[int, int]) -> set[Tag]:
    """Wheel tags a CPython `python` on linux x86_64 with that glibc accepts (what pip would compute there)."""
    major, minor = (int(p) for p in python.split(".")[:2])
    plats = [f"manylinux_{glibc[0]}_{m}_x86_64" for m in range(glibc[1], 4, -1)]
    plats += [legacy for legacy, need in (("manylinux2014_x86_64", 17), ("manylinux2010_x86_64", 12),
                                          ("manylinux1_x86_64", 5)) if glibc[1] >= need]
    plats.append("linux_x86_64")
    return set(cpython_tags((major, minor), [f"cp{major}{minor}"], plats)) | set(
        compatible_tags((major, minor), f"cp{major}{minor}", plats))


def _file_version(name: str, filename: str) -> tuple[Version, frozenset[Tag] | None] | None:
    """(version, wheel tags or None for an sdist) of a file of project `name`; None for other files."""
    try:
        if filename.endswith(".whl"):
            wname, ver, _build, tags = parse_wheel_filename(filename)
            return (ver, tags) if wname == name else None
        sname, ver = parse_sdist_filename(filename)
        return (ver, None) if sname == name else None
    except (InvalidWheelFilename, InvalidSdistFilename, InvalidVersion):
        return None


def _admits(requires_python: str | None, python: Version) -> bool:
    try:
        return not requires_python or SpecifierSet(requires_python).contains(python, prereleases=True)
    except InvalidSpecifier:  # pip ignores a malformed Requires-Python too
        return True


def resolve_pin(pin: Pin, pages: dict[tuple[str, str], ProjectPage]) -> Finding | None:
    """None when the pin installs from a wheel; else a finding (sdist only, missing, yanked, unreachable...)."""
    spec = SpecifierSet(f"=={pin.version}")
    tags = target_tags(pin.python, pin.glibc)
    py = Version(pin.python if pin.python.count(".") >= 2 else f"{pin.python}.0")
    sdists, unreachable, problems = [], [], []
    for index in pin.indexes:
        page = pages[(index, pin.name)]
        where = "PyPI" if index == PYPI else index
        if page.unreachable:
            unreachable.append(f"{where} ({page.unreachable})")
            continue
        if page.missing:
            problems.append(f"no project {pin.name!r} on {where}")
            continue
        files = [(f, fv) for f in page.files if (fv := _file_version(pin.name, f.filename)) and
                 spec.contains(fv[0], prereleases=True)]
        live = [(f, fv) for f, fv in files if f.yanked is None]
        usable = [(f, fv) for f, fv in live if _admits(f.requires_python, py)]
        if any(fv[1] and fv[1] & tags for _, fv in usable):
            return None
        sdists += [f.filename for f, fv in usable if fv[1] is None]
        if not files:
            problems.append(f"version {pin.version} does not exist on {where}")
        elif not live:
            reasons = sorted({f.yanked for f, _ in files if f.yanked})
            problems.append(f"{pin.version} is yanked on {where}" + (f": {reasons[0].strip()}" if reasons else ""))
        elif not sdists:
            pys = sorted({t.interpreter for _, fv in live for t in (fv[1] or ()) if "linux" in t.platform and
                          "x86_64" in t.platform})
            problems.append(f"no wheel for cp{pin.python.replace('.', '')[:3]} manylinux x86_64 (glibc "
                            f"{pin.glibc[0]}.{pin.glibc[1]}) and no sdist on {where}; linux x86_64 wheels: "
                            f"{', '.join(pys) or 'none'}")
    if sdists:
        return Finding(pin.path, pin.line, WARNING, f"{pin.requirement}: no wheel for Python {pin.python} linux "
                       f"x86_64; pip builds the sdist {sdists[0]}")
    if unreachable:
        return Finding(pin.path, pin.line, WARNING, f"{pin.requirement}: not checked (index unreachable): "
                       f"{'; '.join(unreachable)}")
    return Finding(pin.path, pin.line, ERROR, f"{pin.requirement}: {'; '.join(problems)}")


def resolve_pins(pins: list[Pin], workers: int = 8) -> list[Finding]:
    """Resolve all pins, fetching each (index, project) once, concurrently."""
    keys = sorted({(index, pin.name) for pin in pins for index in pin.indexes})
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pages = dict(zip(keys, pool.map(lambda k: fetch_project(*k), keys), strict=True))
    return [f for pin in dict.fromkeys(pins) if (f := resolve_pin(pin, pages))]
