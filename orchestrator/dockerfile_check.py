"""Static checks of the framework Dockerfiles, for images that cannot be built on this machine (GPU images).

Per images/<name>/Dockerfile, once per variant when framework.yaml declares variants (VARIANT substituted):

1. the base image is pinned (a tag that is not `latest`; a warning without an @sha256 digest);
2. every COPY/ADD source exists, workloads/harness.py and the workload module are copied where
   `python -m workloads.<module>` finds them, the ENTRYPOINT runs that module, the USER is not root,
   the image has one Python (framework.yaml `python`, base tag, apt/pythonX.Y use), no BuildKit-only syntax;
3. every Python requirement it installs (COPYed requirements*.txt, `-r` files, `pip install` arguments in
   RUN lines) is pinned with `==`, and (unless offline) each pin resolves on its index for the image's
   Python on linux x86_64: the version exists, is not yanked, and a wheel matches (or only an sdist exists,
   which is a warning). Indexes are read through the standard simple API (PEP 691 JSON, PEP 503 HTML
   fallback): one request per project, never a wheel download. An index that cannot be reached leaves its
   pins "not checked", never passed.

Run: python -m orchestrator.dockerfile_check [--offline] [--root DIR] [framework ...]
"""

from __future__ import annotations

import argparse
import glob
import json
import posixpath
import re
import shlex
import sys
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import requests
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

from orchestrator import PROJECT_ROOT
from orchestrator.errors import InputError
from orchestrator.frameworks import Framework, discover
from orchestrator.images import (
    Instruction,
    _substitute,  # the same ${ARG} expansion the builder uses, so checks see what a build sees
    arg_defaults,
    base_images,
    copy_sources,
    parse_dockerfile,
)

PYPI = "https://pypi.org/simple/"
ERROR, WARNING, INFO = "error", "warning", "info"
# (glibc, distro python3) of the bases GPU images are built on; the glibc decides which manylinux wheels install.
DISTROS = {
    "buster": ((2, 28), "3.7"), "bullseye": ((2, 31), "3.9"), "bookworm": ((2, 36), "3.11"),
    "trixie": ((2, 41), "3.13"), "18.04": ((2, 27), "3.6"), "20.04": ((2, 31), "3.8"),
    "22.04": ((2, 35), "3.10"), "24.04": ((2, 39), "3.12"),
}
ALIASES = {"bionic": "18.04", "focal": "20.04", "jammy": "22.04", "noble": "24.04", "debian:10": "buster",
           "debian:11": "bullseye", "debian:12": "bookworm", "debian:13": "trixie"}
# Most CUDA bases (nvidia/cuda, pytorch/pytorch, NGC) are Ubuntu 22.04; said aloud whenever it is assumed.
DEFAULT_GLIBC = (2, 35)
PIP_VALUE_OPTS = {
    "-r", "--requirement", "-c", "--constraint", "-i", "--index-url", "--extra-index-url", "-f", "--find-links",
    "-t", "--target", "--prefix", "--root", "--platform", "--python-version", "--implementation", "--abi",
    "--progress-bar", "--cache-dir", "--src", "--trusted-host", "--log", "--timeout", "--retries", "--proxy",
    "--cert", "--client-cert", "--exists-action", "--global-option", "--config-settings", "-C", "--no-binary",
    "--only-binary", "--upgrade-strategy", "--root-user-action", "-e", "--editable", "--python", "-p",
    "--use-feature", "--use-deprecated", "--report", "--keyring-provider", "--index-strategy", "--python-platform",
}
SHELL_OPS = {"&&", "||", ";", "|", "&", "(", ")", ";;"}
REDIRECTS = {">", ">>", "<", ">&", "&>", "<&", ">|", "&>>"}
BUILDKIT_FLAGS = ("--mount", "--network", "--security", "--link", "--parents", "--exclude")


@dataclass(frozen=True, order=True)
class Finding:
    path: str
    line: int
    severity: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.severity}: {self.message}"


@dataclass(frozen=True)
class Pin:
    """One `name==version` an image installs, with where it was written and what it must resolve for."""

    requirement: str
    name: str
    version: str
    path: str
    line: int
    indexes: tuple[str, ...]
    python: str
    glibc: tuple[int, int]


@dataclass
class ImageCheck:
    findings: list[Finding] = field(default_factory=list)
    pins: list[Pin] = field(default_factory=list)


# ---------------------------------------------------------------- Dockerfile structure


def _words(ins: Instruction) -> list[str]:
    return json.loads(ins.args) if ins.args.startswith("[") else shlex.split(ins.args)


def _image_ref(ref: str) -> tuple[str, str | None, str | None]:
    """(repository, tag, digest) of an image reference; the tag is after the last ':' of the last path part."""
    ref, _, digest = ref.partition("@")
    head, _, last = ref.rpartition("/")
    name, _, tag = last.partition(":")
    return (f"{head}/{name}" if head else name), (tag or None), (digest or None)


def _distro(ref: str) -> str | None:
    low = ref.lower()
    for alias, key in ALIASES.items():
        if alias in low:
            return key
    m = re.search(r"ubuntu[:-]?(\d\d\.\d\d)", low)
    if m and m.group(1) in DISTROS:
        return m.group(1)
    return next((k for k in DISTROS if not k[0].isdigit() and k in low), None)


def _shell_commands(script: str) -> list[list[str]]:
    """Simple commands of a shell script: split at operators, redirections (and their fd and target) dropped."""
    lex = shlex.shlex(script, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    try:
        tokens = list(lex)
    except ValueError:
        tokens = script.split()
    commands: list[list[str]] = [[]]
    skip = False
    for tok in tokens:
        if skip:
            skip = False
        elif tok in SHELL_OPS:
            commands.append([])
        elif tok in REDIRECTS:
            if commands[-1] and commands[-1][-1].isdigit():
                commands[-1].pop()
            skip = True
        else:
            commands[-1].append(tok)
    return [c for c in commands if c]


def _strip_prefix(cmd: list[str]) -> list[str]:
    """Drop leading `VAR=value`, `sudo` and `env` so the program name comes first."""
    i = 0
    while i < len(cmd) and (re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", cmd[i]) or cmd[i] in {"sudo", "env", "exec"}):
        i += 1
    return cmd[i:]


def _pip_install_args(cmd: list[str]) -> list[str] | None:
    """The arguments after `install` when `cmd` is a pip install."""
    cmd = _strip_prefix(cmd)
    if not cmd:
        return None
    prog = posixpath.basename(cmd[0])
    if re.fullmatch(r"pip(\d+(\.\d+)?)?", prog) and cmd[1:2] == ["install"]:
        return cmd[2:]
    if re.fullmatch(r"python(\d+(\.\d+)?)?", prog) and cmd[1:4] == ["-m", "pip", "install"]:
        return cmd[4:]
    if prog == "uv" and cmd[1:3] == ["pip", "install"]:
        return cmd[3:]
    return None


def _python_mentions(cmd: list[str]) -> list[str]:
    """X.Y of every specific Python a command runs or installs (python3.10, apt python3.10-venv, conda python=3.10)."""
    out = []
    for word in _strip_prefix(cmd):
        base = posixpath.basename(word)
        m = re.fullmatch(r"(?:python|pip)(\d+\.\d+)(?:-[a-z]+)?", base) or \
            re.fullmatch(r"python==?(\d+\.\d+)(?:\.\*|\.\d+)?", word)  # conda/mamba `python=3.10`
        if m:
            out.append(m.group(1))
    return out


def _conda_specs(cmd: list[str]) -> tuple[list[str], list[str]] | None:
    """(package specs, --file paths) of a `conda/mamba/micromamba install|create`, None for any other command."""
    cmd = _strip_prefix(cmd)
    if len(cmd) < 2 or posixpath.basename(cmd[0]) not in {"conda", "mamba", "micromamba"} or \
            cmd[1] not in {"install", "create"}:
        return None
    specs: list[str] = []
    files: list[str] = []
    i = 2
    while i < len(cmd):
        word = cmd[i]
        if word in {"-c", "--channel", "-n", "--name", "-p", "--prefix", "--file", "-f"}:
            if word in {"--file", "-f"} and i + 1 < len(cmd):
                files.append(cmd[i + 1])
            i += 2
            continue
        if word.startswith("--file="):
            files.append(word.partition("=")[2])
        elif not word.startswith("-"):
            specs.append(word)
        i += 1
    return specs, files


def _env_pairs(body: str) -> dict[str, str]:
    words = shlex.split(body)
    if words and "=" not in words[0]:  # legacy form `ENV KEY value with spaces`
        return {words[0]: " ".join(words[1:])}
    return dict(w.partition("=")[::2] for w in words)


def _apt_installs_python3(cmd: list[str]) -> bool:
    cmd = _strip_prefix(cmd)
    if not cmd or posixpath.basename(cmd[0]) not in {"apt-get", "apt"} or "install" not in cmd:
        return False
    return any(w == "python3" or w.startswith("python3-") for w in cmd[cmd.index("install") + 1:])


# ---------------------------------------------------------------- requirements


def _target_env(python: str) -> dict[str, str]:
    full = python if python.count(".") >= 2 else f"{python}.0"
    return {"python_version": ".".join(python.split(".")[:2]), "python_full_version": full,
            "implementation_name": "cpython", "implementation_version": full, "platform_python_implementation":
            "CPython", "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
            "os_name": "posix", "extra": ""}


def _pin_of(text: str, path: str, line: int, python: str | None, out: ImageCheck, indexes: tuple[str, ...],
            glibc: tuple[int, int]) -> None:
    """Check one requirement string is an exact pin; add it to the pins to resolve."""
    if text.startswith((".", "/")) or "://" in text or text.endswith((".whl", ".tar.gz", ".zip")):
        out.findings.append(Finding(path, line, WARNING, f"{text}: a direct path or URL, not an index pin; "
                                    "not checked"))
        return
    try:
        req = Requirement(text)
    except InvalidRequirement as exc:
        out.findings.append(Finding(path, line, ERROR, f"{text!r} is not a valid requirement: {exc}"))
        return
    if req.url:
        out.findings.append(Finding(path, line, WARNING, f"{text}: a direct URL, not an index pin; not checked"))
        return
    if req.marker and python and not req.marker.evaluate(_target_env(python)):
        return  # pip skips it on this image's Python/platform
    specs = list(req.specifier)
    if len(specs) != 1 or specs[0].operator not in {"==", "==="} or "*" in specs[0].version:
        what = f"`{req.specifier}`" if specs else "no version"
        out.findings.append(Finding(path, line, ERROR, f"{text}: not pinned with == ({what})"))
        return
    if python:
        out.pins.append(Pin(text, canonicalize_name(req.name), specs[0].version, path, line, indexes, python, glibc))


@dataclass
class _Indexes:
    """pip's index options as they accumulate over a command line and the requirement files it reads."""

    index: str | None = None
    extra: list[str] = field(default_factory=list)

    def take(self, opt: str, value: str) -> bool:
        if opt in {"-i", "--index-url"}:
            self.index = value
        elif opt == "--extra-index-url":
            self.extra.append(value)
        else:
            return False
        return True

    def urls(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys([self.index or PYPI, *self.extra]))


def _option(tokens: list[str], i: int) -> tuple[str, str | None, int]:
    """(option, value, next index) at tokens[i], for `--opt=value` and `--opt value` forms."""
    opt, eq, value = tokens[i].partition("=")
    if eq:
        return opt, value, i + 1
    if opt in PIP_VALUE_OPTS:
        return opt, (tokens[i + 1] if i + 1 < len(tokens) else None), i + 2
    return opt, None, i + 1


def _requirement_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, logical line) of a requirements file: comments dropped, continuations joined."""
    out: list[tuple[int, str]] = []
    buf, start = "", 0
    for no, raw in enumerate(path.read_text().splitlines(), 1):
        text = re.sub(r"(^|\s)#.*$", "", raw).rstrip()
        if not buf:
            start = no
        if text.endswith("\\"):
            buf += text[:-1] + " "
            continue
        buf = (buf + text).strip()
        if buf:
            out.append((start, buf))
        buf = ""
    return out


def _read_requirements(root: Path, path: Path, indexes: _Indexes, seen: set[Path],
                       out: ImageCheck) -> list[tuple[str, str, int]]:
    """Requirement strings (text, file, line) of a requirements file and the files it includes with -r."""
    rel = _rel(root, path)
    if path in seen:
        return []
    seen.add(path)
    reqs: list[tuple[str, str, int]] = []
    for no, line in _requirement_lines(path):
        if not line.startswith("-"):
            # per-requirement options (--hash, --config-settings) follow the requirement itself
            reqs.append((re.split(r"\s+--?[A-Za-z]", line, maxsplit=1)[0].strip(), rel, no))
            continue
        tokens = shlex.split(line)
        opt, value, _ = _option(tokens, 0)
        if value is None and opt in PIP_VALUE_OPTS:
            out.findings.append(Finding(rel, no, ERROR, f"{opt} without a value"))
        elif indexes.take(opt, value or ""):
            out.findings.append(Finding(rel, no, INFO, f"index {value} ({opt})"))
        elif opt in {"-r", "--requirement"}:
            nested = path.parent / (value or "")
            if nested.is_file():
                reqs += _read_requirements(root, nested, indexes, seen, out)
            else:
                out.findings.append(Finding(rel, no, ERROR, f"-r {value}: no such file next to {rel}"))
        elif opt in {"-e", "--editable"}:
            out.findings.append(Finding(rel, no, ERROR, f"editable install {value}: not a pinned release"))
    return reqs


# ---------------------------------------------------------------- one image


def _rel(root: Path, path: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def _copied_files(root: Path, ins: Instruction, args: dict[str, str], workdir: str,
                  out: ImageCheck, df: str) -> dict[str, Path]:
    """Image path -> repo file for one COPY/ADD, reporting sources that do not exist."""
    sources = copy_sources([ins], args)
    words = [w for w in _words(ins) if not w.startswith("--")]
    if not sources or len(words) < 2:
        return {}
    dest = _substitute(words[-1], args)
    dest = posixpath.normpath(posixpath.join(workdir, dest)) + ("/" if dest.endswith("/") else "")
    into_dir = dest.endswith("/") or len(sources) > 1
    files: dict[str, Path] = {}
    for src in sources:
        if "$" in src:
            out.findings.append(Finding(df, ins.line, ERROR, f"{ins.keyword} source {src!r}: unresolved build arg"))
            continue
        matches = sorted(glob.glob(str(root / src), recursive=True))
        if not matches:
            out.findings.append(Finding(df, ins.line, ERROR, f"{ins.keyword} source {src!r} does not exist in "
                                        "the repo"))
        for m in map(Path, matches):
            if m.is_dir():  # Docker copies a directory's contents, not the directory itself
                for f in (f for f in m.rglob("*") if f.is_file() and "__pycache__" not in f.parts):
                    files[posixpath.join(dest, f.relative_to(m).as_posix())] = f
            else:
                files[posixpath.join(dest, m.name) if into_dir else dest.rstrip("/")] = m
    return files


@dataclass
class _Scan:
    """What walking a Dockerfile's instructions in order learns about the image it builds."""

    root: Path
    df: str
    args: dict[str, str]
    out: ImageCheck
    pythons: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    glibc: tuple[int, int] | None = None
    distro_python: tuple[str, str] | None = None
    apt_python3: bool = False
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    user: tuple[int, str] | None = None
    entry: tuple[int, list[str]] | None = None
    image_files: dict[str, Path] = field(default_factory=dict)  # image path -> repo file
    req_files: list[Path] = field(default_factory=list)
    run_pins: list[tuple[str, int, _Indexes]] = field(default_factory=list)
    run_reqfiles: dict[Path, _Indexes] = field(default_factory=dict)

    def add(self, line: int, severity: str, message: str) -> None:
        self.out.findings.append(Finding(self.df, line, severity, message))

    def walk(self, instructions: list[Instruction]) -> None:
        froms = [i for i in instructions if i.keyword == "FROM"]
        for ins in instructions:
            vals = {**self.args, **self.env}
            if ins.keyword == "FROM":
                n = froms.index(ins)
                bases = base_images(froms[: n + 1], self.args)
                self.workdir, self.env = "/", {}
                if len(bases) > len(base_images(froms[:n], self.args)):  # not FROM an earlier stage
                    self.base(ins.line, bases[-1])
            elif ins.keyword == "ENV":
                self.env.update(_env_pairs(_substitute(ins.args, vals)))
            elif ins.keyword == "WORKDIR":
                self.workdir = posixpath.normpath(posixpath.join(self.workdir, _substitute(ins.args, vals).strip('"')))
            elif ins.keyword == "USER":
                self.user = (ins.line, _substitute(ins.args, vals).strip())
            elif ins.keyword == "ENTRYPOINT":
                self.entry = (ins.line, _words(ins))
            elif ins.keyword in {"COPY", "ADD"}:
                if bad := [w for w in ins.args.split() if w.startswith(BUILDKIT_FLAGS)]:
                    self.add(ins.line, ERROR, f"{bad[0]} needs BuildKit; the orchestrator builds with the legacy "
                             "builder (docker-py)")
                new = _copied_files(self.root, ins, vals, self.workdir, self.out, self.df)
                self.image_files.update(new)
                self.req_files += [f for f in new.values() if re.fullmatch(r"requirements.*\.txt", f.name)]
            elif ins.keyword == "RUN":
                self.run(ins, vals)

    def base(self, line: int, base: str) -> None:
        repo, tag, digest = _image_ref(base)
        if "$" in base or not base:
            self.add(line, ERROR, f"base image {base!r}: build arg without a default")
        elif base != "scratch" and not digest and (tag is None or tag == "latest"):
            self.add(line, ERROR, f"base image {base!r} is not pinned: give a concrete tag (not latest), ideally "
                     "with @sha256:<digest>")
        elif base != "scratch" and not digest:
            self.add(line, WARNING, f"base image {base!r} has no @sha256 digest: the tag can move or be deleted "
                     "upstream")
        if repo.rsplit("/", 1)[-1] == "python" and tag and (m := re.match(r"(\d+\.\d+)", tag)):
            self.pythons[m.group(1)].append(f"base {base}")
        if (key := _distro(base)) is not None:
            self.glibc, self.distro_python = DISTROS[key][0], (DISTROS[key][1], key)

    def run(self, ins: Instruction, vals: dict[str, str]) -> None:
        if ins.args.startswith(BUILDKIT_FLAGS) or "<<" in ins.args:
            self.add(ins.line, ERROR, "RUN --mount/--network/heredoc needs BuildKit; the orchestrator builds with "
                     "the legacy builder (docker-py)")
        commands = [_words(ins)] if ins.args.startswith("[") else _shell_commands(_substitute(ins.args, vals))
        for cmd in commands:
            for v in _python_mentions(cmd):
                self.pythons[v].append(f"RUN at line {ins.line}")
            self.apt_python3 = self.apt_python3 or _apt_installs_python3(cmd)
            if (tokens := _pip_install_args(cmd)) is not None:
                self.pip_install(ins.line, tokens)
            elif (conda := _conda_specs(cmd)) is not None:
                self.conda(ins.line, *conda)

    def pip_install(self, line: int, tokens: list[str]) -> None:
        idx = _Indexes(self.env.get("PIP_INDEX_URL"), self.env.get("PIP_EXTRA_INDEX_URL", "").split())
        i = 0
        while i < len(tokens):
            if not tokens[i].startswith("-"):
                self.run_pins.append((tokens[i], line, idx))
                i += 1
                continue
            opt, value, i = _option(tokens, i)
            if idx.take(opt, value or ""):
                self.add(line, INFO, f"index {value} ({opt})")
            elif opt in {"-r", "--requirement"} and value:
                target = posixpath.normpath(posixpath.join(self.workdir, value))
                if target in self.image_files:
                    self.run_reqfiles[self.image_files[target]] = idx
                else:
                    self.add(line, ERROR, f"pip install -r {value}: the file is not COPYed into the image before "
                             "this RUN")
            elif opt in {"-e", "--editable"}:
                self.add(line, WARNING, f"editable install {value}: not checked")

    def conda(self, line: int, specs: list[str], files: list[str]) -> None:
        """conda packages are not on PyPI: check they are pinned, note the Python they bring, do not resolve."""
        entries = [(spec, self.df, line) for spec in specs]
        for value in files:
            target = posixpath.normpath(posixpath.join(self.workdir, value))
            if target not in self.image_files:
                self.add(line, ERROR, f"conda --file {value}: the file is not COPYed into the image before this RUN")
                continue
            path = self.image_files[target]
            entries += [(text, _rel(self.root, path), no) for no, text in _requirement_lines(path)]
            if path in self.req_files:  # a conda list named requirements*.txt is not pip's
                self.req_files.remove(path)
        for spec, where, no in entries:
            if not re.fullmatch(r"[^=<>!~*,|\s]+==?[0-9][^<>!~*,|\s]*", spec):
                self.out.findings.append(Finding(where, no, WARNING, f"conda package {spec} is not pinned to a "
                                                 "version"))
            if where != self.df and (m := re.fullmatch(r"python==?(\d+\.\d+)[.\d*]*", spec)):
                self.pythons[m.group(1)].append(f"conda {where}")
        if entries:
            self.add(line, INFO, f"conda packages, not resolved by this check: {' '.join(e[0] for e in entries)}")

    def check_runtime(self, module: str) -> None:
        """ENTRYPOINT runs the workload module, USER is not root, the workload files are where -m finds them."""
        if self.entry is None:
            self.add(1, ERROR, f'no ENTRYPOINT: expected ["python3", "-m", "workloads.{module}"]')
        else:
            line, words = self.entry
            target = f"workloads.{module}"
            if target not in words or words[max(0, words.index(target) - 1)] != "-m":
                self.add(line, ERROR, f"ENTRYPOINT {words} does not run -m {target}")
            elif m := re.fullmatch(r"python(\d+\.\d+)", posixpath.basename(words[0])):
                self.pythons[m.group(1)].append(f"ENTRYPOINT at line {line}")
        if self.user is None:
            self.add(1, ERROR, "no USER: the workload would run as root")
        elif self.user[1].split(":")[0] in {"root", "0"}:
            self.add(self.user[0], ERROR, f"USER {self.user[1]} is root")
        search = [self.workdir, *(p for p in self.env.get("PYTHONPATH", "").split(":") if p)]
        for name in ("harness.py", f"{module}.py"):
            wanted = (self.root / "workloads" / name).resolve()
            where = [p for p, f in self.image_files.items() if f.resolve() == wanted]
            if not where:
                self.add(1, ERROR, f"does not COPY workloads/{name}")
            elif not any(posixpath.join(s, "workloads", name) in where for s in search):
                self.add(1, ERROR, f"workloads/{name} is copied to {where[0]}, but `python -m` looks in "
                         f"{' and '.join(search)} (WORKDIR/PYTHONPATH)")

    def image_python(self, declared: str | None) -> str | None:
        """The one Python the image runs: framework.yaml's, checked against every other sign of a Python."""
        if declared:
            self.pythons[".".join(declared.split(".")[:2])].insert(0, "framework.yaml")
        if self.apt_python3 and self.distro_python:
            self.pythons[self.distro_python[0]].append(f"apt python3 of {self.distro_python[1]}")
        python = declared
        if len(self.pythons) > 1:
            said = "; ".join(f"{v} ({', '.join(w)})" for v, w in sorted(self.pythons.items()))
            self.add(1, ERROR, f"more than one Python: {said}")
        elif not python and self.pythons:
            python = next(iter(self.pythons))
            self.add(1, WARNING, f"framework.yaml has no `python`; using {python} from {self.pythons[python][0]}")
        elif not python:
            self.add(1, ERROR, 'cannot tell the image\'s Python: add `python: "X.Y"` to framework.yaml (pins are '
                     "not resolved without it)")
        if self.glibc is None and python:
            self.add(1, INFO, f"base distro unknown: wheels matched for glibc {DEFAULT_GLIBC[0]}.{DEFAULT_GLIBC[1]} "
                     "(Ubuntu 22.04)")
        return python

    def collect_pins(self, python: str | None) -> None:
        glibc = self.glibc or DEFAULT_GLIBC
        seen: set[Path] = set()
        for path in dict.fromkeys(self.req_files + list(self.run_reqfiles)):
            base = self.run_reqfiles.get(path) or _Indexes()
            idx = _Indexes(base.index, list(base.extra))  # a file's own -i/--extra-index-url stay with that file
            for text, rel, no in _read_requirements(self.root, path, idx, seen, self.out):
                _pin_of(text, rel, no, python, self.out, idx.urls(), glibc)
        for text, line, idx in self.run_pins:
            _pin_of(text, self.df, line, python, self.out, idx.urls(), glibc)
        versions: dict[str, set[str]] = defaultdict(set)
        for pin in self.out.pins:
            versions[pin.name].add(pin.version)
        for name, vs in sorted(versions.items()):
            if len(vs) > 1:
                self.add(1, ERROR, f"conflicting pins of {name}: {', '.join(sorted(vs))}")


def check_image(root: Path, fw: Framework, variant: str | None = None) -> ImageCheck:
    """Structural checks of one image (one variant) and the pins it installs; no network."""
    out = ImageCheck()
    df = _rel(root, fw.dockerfile)
    instructions = parse_dockerfile(fw.dockerfile.read_text())
    if not any(i.keyword == "FROM" for i in instructions):
        out.findings.append(Finding(df, 1, ERROR, "no FROM instruction (empty or unfinished Dockerfile)"))
        return out
    scan = _Scan(root, df, {**arg_defaults(instructions), **({"VARIANT": variant} if variant else {})}, out)
    if fw.meta.variants and "VARIANT" not in arg_defaults(instructions):
        scan.add(1, WARNING, "framework.yaml declares variants but the Dockerfile has no ARG VARIANT: every "
                 "variant builds the same image")
    scan.walk(instructions)
    scan.check_runtime(fw.workload_module)
    scan.collect_pins(scan.image_python(fw.meta.python))
    return out


# ---------------------------------------------------------------- resolution against an index


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


# ---------------------------------------------------------------- whole repo


def check(root: Path, names: list[str] | None = None, offline: bool = False) -> tuple[list[str], dict[str, int]]:
    """Output lines (one per finding, variant-tagged when not all variants share it) and summary counts."""
    frameworks = discover(root / "images")
    unknown = sorted(set(names or ()) - set(frameworks))
    if unknown:
        raise InputError(f"no images/<name>/Dockerfile for: {', '.join(unknown)}")
    selected = {n: fw for n, fw in frameworks.items() if not names or n in names}
    builds = {n: {v or "" for v in (fw.meta.variants or [None])} for n, fw in selected.items()}
    per: dict[Finding, set[tuple[str, str]]] = defaultdict(set)
    pins: dict[Pin, set[tuple[str, str]]] = defaultdict(set)
    for name, fw in selected.items():
        for variant in sorted(builds[name]):
            result = check_image(root, fw, variant or None)
            for f in result.findings:
                per[f].add((name, variant))
            for p in result.pins:
                pins[p].add((name, variant))
    if not offline:
        for f in resolve_pins(list(pins)):
            per[f] |= {b for p, bs in pins.items() if (p.path, p.line) == (f.path, f.line) for b in bs}
    lines = []
    for f in sorted(per):
        partial = {n for n, _ in per[f] if {v for m, v in per[f] if m == n} != builds[n]}
        tags = sorted({v for n, v in per[f] if n in partial})
        lines.append(str(f) + (f" [variant {', '.join(tags)}]" if tags else ""))
    counts = {"images": len(selected), "builds": sum(map(len, builds.values())),
              "pins": len({(p.name, p.version, p.indexes, p.python, p.glibc) for p in pins})}
    for sev in (ERROR, WARNING):
        counts[sev] = sum(f.severity == sev for f in per)
    counts["unchecked"] = sum("not checked (index unreachable)" in f.message for f in per)
    return lines, counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m orchestrator.dockerfile_check", description=__doc__.split("\n")[0])
    ap.add_argument("frameworks", nargs="*", help="framework names (default: every images/<name>/Dockerfile)")
    ap.add_argument("--offline", action="store_true", help="skip resolving pins on the package indexes")
    ap.add_argument("--root", type=Path, default=PROJECT_ROOT, help="project root holding images/ and workloads/")
    opts = ap.parse_args(argv)
    try:
        lines, counts = check(opts.root, opts.frameworks, opts.offline)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for line in lines:
        print(line)
    resolved = "not resolved: --offline" if opts.offline else f"{counts['unchecked']} not checked"
    print(f"checked {counts['images']} images ({counts['builds']} builds), {counts['pins']} pins ({resolved}): "
          f"{counts[ERROR]} errors, {counts[WARNING]} warnings")
    return 1 if counts[ERROR] else 0


if __name__ == "__main__":
    raise SystemExit(main())
