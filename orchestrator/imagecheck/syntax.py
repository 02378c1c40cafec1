"""Dockerfile structure: instruction words, image references, base distros, the commands of a RUN line."""

from __future__ import annotations

import json
import posixpath
import re
import shlex

from orchestrator.images import Instruction

# (glibc, distro python3) of the bases GPU images are built on; the glibc decides which manylinux wheels install.
DISTROS = {
    "buster": ((2, 28), "3.7"), "bullseye": ((2, 31), "3.9"), "bookworm": ((2, 36), "3.11"),
    "trixie": ((2, 41), "3.13"), "18.04": ((2, 27), "3.6"), "20.04": ((2, 31), "3.8"),
    "22.04": ((2, 35), "3.10"), "24.04": ((2, 39), "3.12"),
}
ALIASES = {"bionic": "18.04", "focal": "20.04", "jammy": "22.04", "noble": "24.04", "debian:10": "buster",
           "debian:11": "bullseye", "debian:12": "bookworm", "debian:13": "trixie"}
SHELL_OPS = {"&&", "||", ";", "|", "&", "(", ")", ";;"}
REDIRECTS = {">", ">>", "<", ">&", "&>", "<&", ">|", "&>>"}


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
