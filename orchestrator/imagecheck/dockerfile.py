"""One image: walk its Dockerfile's instructions, check its structure, collect the pins it installs (no network)."""

from __future__ import annotations

import glob
import posixpath
import re
import shlex
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.frameworks import BUILD_CONSTRAINTS, Framework, discover
from orchestrator.imagecheck.findings import ERROR, INFO, WARNING, Finding, ImageCheck, _rel
from orchestrator.imagecheck.requirements import _Indexes, _option, _pin_of, _read_requirements, _requirement_lines
from orchestrator.imagecheck.syntax import (
    DISTROS,
    _apt_installs_python3,
    _conda_specs,
    _distro,
    _env_pairs,
    _image_ref,
    _pip_install_args,
    _python_mentions,
    _shell_commands,
    _words,
)
from orchestrator.images import (
    TAIL_DOCKERFILE,
    Instruction,
    _substitute,  # the same ${ARG} expansion the builder uses, so checks see what a build sees
    arg_defaults,
    base_images,
    copy_sources,
    parse_dockerfile,
    project_image,
    recipe,
)

# Most CUDA bases (nvidia/cuda, pytorch/pytorch, NGC) are Ubuntu 22.04; said aloud whenever it is assumed.
DEFAULT_GLIBC = (2, 35)
# NGC framework containers (nvcr.io/nvidia/<framework>:YY.MM-py3) of releases 23.01 to 24.09 are Ubuntu 22.04 with
# its Python 3.10 (NVIDIA's release notes, e.g. MXNet 24.05/24.06); other releases are not assumed.
NGC_RE = re.compile(r"nvcr\.io/nvidia/[^:/@]+:(\d\d)\.(\d\d)-py3")
NGC_UBUNTU_2204 = ((23, 1), (24, 9))
# A drop-in's build-time pins (setuptools for a setup.py that imports pkg_resources): orchestrator/venvs.py.
CONSTRAINT_USE = re.compile(r"\bPIP_(?:BUILD_)?CONSTRAINT=|--build-constraint\b")
BUILDKIT_FLAGS = ("--mount", "--network", "--security", "--link", "--parents", "--exclude")


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
    frameworks: dict[str, Framework] = field(default_factory=dict)
    flavour: str = "gpu"
    depth: int = 0

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
                    if (parent := project_image(bases[-1], self.frameworks)) is not None:
                        self.inherit(ins.line, bases[-1], *parent)
                    else:
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
                self.req_files += [f for f in new.values() if re.fullmatch(r"requirements.*\.txt", f.name)
                                   or f.name == BUILD_CONSTRAINTS]
            elif ins.keyword == "RUN":
                self.run(ins, vals)

    def inherit(self, line: int, ref: str, fw: Framework, variant: str | None) -> None:
        """FROM another project image: start from what walking that image's own Dockerfile (and tail) learns.
        Its own findings are its check's, not repeated here; its pins are, so a conflicting child pin shows."""
        if self.depth > 8:
            self.add(line, ERROR, f"FROM {ref}: project images nest too deep (a cycle?)")
            return
        r = recipe(self.root, self.frameworks, fw, variant, self.flavour, {})
        sub = _Scan(self.root, _rel(self.root, fw.dockerfile), {**arg_defaults(parse_dockerfile(r.text)), **r.args},
                    ImageCheck(), frameworks=self.frameworks, flavour=self.flavour, depth=self.depth + 1)
        sub.walk(parse_dockerfile(r.text))
        for version, where in sub.pythons.items():
            self.pythons[version].append(f"{ref} ({', '.join(where)})")
        self.glibc, self.distro_python, self.apt_python3 = sub.glibc, sub.distro_python, sub.apt_python3
        self.env, self.workdir, self.user = dict(sub.env), sub.workdir, sub.user
        self.image_files.update(sub.image_files)
        self.req_files += sub.req_files
        self.run_reqfiles.update(sub.run_reqfiles)
        self.run_pins += sub.run_pins
        self.add(line, INFO, f"FROM project image {ref}: built first by the orchestrator, same flavour")

    def base(self, line: int, base: str) -> None:
        repo, tag, digest = _image_ref(base)
        if (m := NGC_RE.search(base)) is not None:
            release = (int(m.group(1)), int(m.group(2)))
            if NGC_UBUNTU_2204[0] <= release <= NGC_UBUNTU_2204[1]:
                self.glibc, self.distro_python = DISTROS["22.04"][0], ("3.10", "22.04")
                self.pythons["3.10"].append(f"base {base} (NGC {release[0]}.{release[1]:02d}: Ubuntu 22.04)")
            self.add(line, INFO, f"NGC base {base}: pulled from nvcr.io (public, no login); not built or resolved "
                     "by this check")
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
            if words[:2] == ["/bin/sh", "-c"] and len(words) > 2 and "$LSTM_BENCH_WORKLOAD" in words[2]:
                # the shared tail's form: the module comes from ENV LSTM_BENCH_WORKLOAD
                words = [w for w in shlex.split(words[2].replace("$LSTM_BENCH_WORKLOAD",
                                                                 self.env.get("LSTM_BENCH_WORKLOAD", "")))
                         if w != "exec"]
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

    def check_build_constraints(self, fw: Framework, instructions: list[Instruction]) -> None:
        """images/<name>/build-constraints.txt, when it constrains anything, is copied in and applied to pip's
        isolated builds (docs/adding-a-framework.md, "Build constraints"); its pins are checked like the rest."""
        path = fw.build_constraints
        if path is None or not _requirement_lines(path):
            return
        rel = _rel(self.root, path)
        if path.resolve() not in {f.resolve() for f in self.image_files.values()}:
            self.add(1, ERROR, f"{rel} is not copied into the image: pip would build its sdists with today's "
                     "setuptools (COPY it and set PIP_CONSTRAINT and PIP_BUILD_CONSTRAINT on the pip install)")
            self.req_files.append(path)
        elif not any(ins.keyword in {"RUN", "ENV"} and CONSTRAINT_USE.search(ins.args) for ins in instructions):
            self.add(1, ERROR, f"{rel} is copied but not applied: no RUN or ENV sets PIP_CONSTRAINT / "
                     "PIP_BUILD_CONSTRAINT or passes --build-constraint")

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


def check_image(root: Path, fw: Framework, variant: str | None = None, flavour: str = "gpu",
                frameworks: dict[str, Framework] | None = None) -> ImageCheck:
    """Structural checks of one image (one variant, one flavour) and the pins it installs; no network.

    It checks what the orchestrator builds: the Dockerfile plus the shared tail when it has no ENTRYPOINT, with a
    `FROM <project image>` walked through that image's own Dockerfile."""
    out = ImageCheck()
    df = _rel(root, fw.dockerfile)
    text = fw.dockerfile.read_text()
    if not any(i.keyword == "FROM" for i in parse_dockerfile(text)):
        out.findings.append(Finding(df, 1, ERROR, "no FROM instruction (empty or unfinished Dockerfile)"))
        return out
    known = {**(frameworks if frameworks is not None else discover(root / "images")), fw.name: fw}
    try:
        r = recipe(root, known, fw, variant, flavour, {})
    except (OSError, ValueError) as exc:
        out.findings.append(Finding(df, 1, ERROR, str(exc).removeprefix(f"{fw.dockerfile}: ")))
        return out
    instructions = parse_dockerfile(r.text)
    scan = _Scan(root, df, {**arg_defaults(instructions), **r.args}, out, frameworks=known, flavour=flavour)
    if fw.meta.variants and "VARIANT" not in arg_defaults(instructions):
        scan.add(1, WARNING, "framework.yaml declares variants but the Dockerfile has no ARG VARIANT: every "
                 "variant builds the same image")
    scan.walk(instructions)
    scan.check_runtime(fw.workload_module)
    scan.check_build_constraints(fw, instructions)
    scan.collect_pins(scan.image_python(fw.meta.python))
    # Lines past the Dockerfile's own are the shared tail's.
    own_lines = len(text.rstrip("\n").splitlines()) + 1
    out.findings[:] = [Finding(TAIL_DOCKERFILE, f.line - own_lines, f.severity, f.message)
                       if f.path == df and f.line > own_lines else f for f in out.findings]
    return out

