"""The static Dockerfile check: fixture repos that must pass or fail, a local package index, PyPI, the real images."""

from __future__ import annotations

import functools
import http.server
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from packaging.tags import Tag

from orchestrator.frameworks import discover
from orchestrator.imagecheck import PYPI, check, check_image, main, target_tags
from tests.conftest import missing

ROOT = Path(__file__).resolve().parent.parent
REAL = sorted(discover(ROOT / "images"))

GOOD = """\
# a GPU-style image: distro Python from apt on a CUDA base
ARG BASE_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu22.04
FROM ${BASE_IMAGE}
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-pip && rm -rf /var/lib/apt/lists/*
COPY images/myfw/requirements.txt /opt/lstm-bench/requirements.txt
RUN python3 -m pip install --no-cache-dir -r /opt/lstm-bench/requirements.txt
RUN useradd --uid 10001 --no-create-home bench
COPY workloads/__init__.py workloads/harness.py workloads/myfw.py /opt/lstm-bench/workloads/
WORKDIR /opt/lstm-bench
USER 10001
ENTRYPOINT ["python3", "-m", "workloads.myfw"]
"""


def make_repo(tmp: Path, dockerfile: str = GOOD, requirements: str = "numpy==1.26.4\n", python: str | None = "3.10",
              extra: dict[str, str] | None = None, yaml_extra: str = "") -> Path:
    """A project root with workloads/ and one framework `myfw` under images/."""
    (tmp / "workloads").mkdir(parents=True, exist_ok=True)
    for name in ("__init__.py", "harness.py", "myfw.py"):
        (tmp / "workloads" / name).write_text("# fixture\n")
    fw = tmp / "images" / "myfw"
    fw.mkdir(parents=True, exist_ok=True)
    (fw / "Dockerfile").write_text(dockerfile)
    (fw / "requirements.txt").write_text(requirements)
    (fw / "framework.yaml").write_text((f'python: "{python}"\n' if python else "") + yaml_extra)
    for rel, text in (extra or {}).items():
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_text(text)
    return tmp


def errors(lines: list[str]) -> list[str]:
    return [line for line in lines if ": error: " in line]


def run_check(root: Path, offline: bool = True) -> list[str]:
    return check(root, offline=offline)[0]


# ---------------------------------------------------------------- structure, offline


def test_good_fixture_passes_with_only_the_digest_warning(tmp_path: Path) -> None:
    lines = run_check(make_repo(tmp_path))
    assert errors(lines) == []
    assert [line for line in lines if ": warning: " in line] == [
        "images/myfw/Dockerfile:3: warning: base image 'nvidia/cuda:12.6.3-cudnn-runtime-ubuntu22.04' has no "
        "@sha256 digest: the tag can move or be deleted upstream"]
    assert main(["--offline", "--root", str(tmp_path)]) == 0


def test_digest_pinned_base_gives_no_warning(tmp_path: Path) -> None:
    digest = "sha256:" + "ab" * 32
    root = make_repo(tmp_path, GOOD.replace("ubuntu22.04\n", f"ubuntu22.04@{digest}\n", 1))
    assert [line for line in run_check(root) if ": warning: " in line or ": error: " in line] == []


FAILING = [
    ("unpinned name", {"requirements": "torch\n"}, "images/myfw/requirements.txt:1: error: torch: not pinned with =="),
    ("range", {"requirements": "torch>=2\n"}, "images/myfw/requirements.txt:1: error: torch>=2: not pinned with =="),
    ("wildcard", {"requirements": "# gpu\n\ntorch==2.*\n"}, "requirements.txt:3: error: torch==2.*: not pinned"),
    ("pip in RUN, unquoted >= is a shell redirect",
     {"dockerfile": GOOD.replace("RUN useradd", "RUN pip3 install torch>=2 && useradd")},
     "Dockerfile:7: error: torch: not pinned with == (no version)"),
    ("pip in RUN, quoted range",
     {"dockerfile": GOOD.replace("RUN useradd", "RUN python3 -m pip install 'jax[cuda12]~=0.4' && useradd")},
     "Dockerfile:7: error: jax[cuda12]~=0.4: not pinned"),
    ("no tag", {"dockerfile": GOOD.replace("nvidia/cuda:12.6.3-cudnn-runtime-ubuntu22.04", "ubuntu")},
     "Dockerfile:3: error: base image 'ubuntu' is not pinned"),
    ("latest", {"dockerfile": GOOD.replace("nvidia/cuda:12.6.3-cudnn-runtime-ubuntu22.04", "ubuntu:latest")},
     "Dockerfile:3: error: base image 'ubuntu:latest' is not pinned"),
    ("base arg without default", {"dockerfile": GOOD.replace("=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu22.04", "")},
     "Dockerfile:3: error: base image '': build arg without a default"),
    ("missing COPY source", {"dockerfile": GOOD.replace("images/myfw/requirements.txt", "images/myfw/req-gpu.txt")},
     "Dockerfile:5: error: COPY source 'images/myfw/req-gpu.txt' does not exist in the repo"),
    ("wrong module", {"dockerfile": GOOD.replace('"workloads.myfw"]', '"workloads.other"]')},
     "Dockerfile:11: error: ENTRYPOINT ['python3', '-m', 'workloads.other'] does not run -m workloads.myfw"),
    ("no entrypoint", {"dockerfile": GOOD.replace('ENTRYPOINT ["python3", "-m", "workloads.myfw"]', "")},
     'error: no ENTRYPOINT: expected ["python3", "-m", "workloads.myfw"]'),
    ("no user", {"dockerfile": GOOD.replace("USER 10001\n", "")}, "error: no USER: the workload would run as root"),
    ("root user", {"dockerfile": GOOD.replace("USER 10001", "USER root:root")}, "Dockerfile:10: error: USER root:root"),
    ("harness not copied", {"dockerfile": GOOD.replace(" workloads/harness.py", "")},
     "error: does not COPY workloads/harness.py"),
    ("workloads outside WORKDIR", {"dockerfile": GOOD.replace("/opt/lstm-bench/workloads/", "/app/workloads/")},
     "error: workloads/myfw.py is copied to /app/workloads/myfw.py, but `python -m` looks in /opt/lstm-bench"),
    ("two Pythons", {"python": "3.11"},
     "error: more than one Python: 3.10 (apt python3 of 22.04); 3.11 (framework.yaml)"),
    ("no Python known", {"python": None, "dockerfile": GOOD.replace("python3 python3-pip", "curl")},
     "error: cannot tell the image's Python"),
    ("BuildKit cache mount",
     {"dockerfile": GOOD.replace("RUN python3 -m pip", "RUN --mount=type=cache,target=/root/.cache python3 -m pip")},
     "Dockerfile:6: error: RUN --mount/--network/heredoc needs BuildKit"),
    ("conflicting pins", {"dockerfile": GOOD.replace("RUN useradd", "RUN pip install numpy==1.23.5 && useradd")},
     "error: conflicting pins of numpy: 1.23.5, 1.26.4"),
    ("-r of a file never copied",
     {"dockerfile": GOOD.replace("-r /opt/lstm-bench/requirements.txt", "-r /opt/lstm-bench/requirements-gpu.txt")},
     "Dockerfile:6: error: pip install -r /opt/lstm-bench/requirements-gpu.txt: the file is not COPYed"),
    ("empty Dockerfile", {"dockerfile": ""}, "Dockerfile:1: error: no FROM instruction"),
    ("editable in requirements", {"requirements": "-e ./src\n"}, "requirements.txt:1: error: editable install"),
]


@pytest.mark.parametrize(("case", "repo", "expected"), FAILING, ids=[c[0] for c in FAILING])
def test_fixture_must_fail(tmp_path: Path, case: str, repo: dict, expected: str) -> None:
    lines = run_check(make_repo(tmp_path, **repo))
    assert any(expected in line for line in errors(lines)), f"{case}: {expected!r} not in\n" + "\n".join(lines)
    assert main(["--offline", "--root", str(tmp_path)]) == 1


def test_workloads_found_through_pythonpath(tmp_path: Path) -> None:
    df = GOOD.replace("/opt/lstm-bench/workloads/", "/app/workloads/")
    df = df.replace("WORKDIR", "ENV PYTHONPATH=/app\nWORKDIR")
    assert errors(run_check(make_repo(tmp_path, df))) == []


def test_python_base_image_and_requirement_markers(tmp_path: Path) -> None:
    df = GOOD.replace("nvidia/cuda:12.6.3-cudnn-runtime-ubuntu22.04", "python:3.11.10-slim-bookworm").replace(
        "apt-get install -y --no-install-recommends python3 python3-pip", "apt-get install -y curl")
    # pip skips a requirement whose marker is false on the image's Python, so its pin does not matter
    reqs = 'numpy==1.26.4\ntorch ; python_version < "3.8"\nscipy==1.10.1 ; python_version >= "3.11"\n'
    root = make_repo(tmp_path, df, reqs, python="3.11")
    assert errors(run_check(root)) == []
    fw = discover(root / "images")["myfw"]
    assert sorted((p.name, p.version, p.python, p.glibc) for p in check_image(root, fw).pins) == [
        ("numpy", "1.26.4", "3.11", (2, 36)), ("scipy", "1.10.1", "3.11", (2, 36))]
    assert errors(run_check(make_repo(tmp_path, df, reqs, python="3.12"))) == [
        "images/myfw/Dockerfile:1: error: more than one Python: 3.11 (base python:3.11.10-slim-bookworm); "
        "3.12 (framework.yaml)"]


def test_index_options_are_recorded_and_attached_to_pins(tmp_path: Path) -> None:
    df = GOOD.replace("RUN useradd", "RUN pip3 install --extra-index-url https://download.pytorch.org/whl/cu126 "
                      "torch==2.13.0 && useradd")
    reqs = "--index-url https://mirror.example/simple\nnumpy==1.26.4 --hash=sha256:abc\n"
    root = make_repo(tmp_path, df, reqs)
    lines = run_check(root)
    assert "images/myfw/requirements.txt:1: info: index https://mirror.example/simple (--index-url)" in lines
    assert "images/myfw/Dockerfile:7: info: index https://download.pytorch.org/whl/cu126 (--extra-index-url)" in lines
    pins = {p.name: p.indexes for p in check_image(root, discover(root / "images")["myfw"]).pins}
    assert pins == {"numpy": ("https://mirror.example/simple",),
                    "torch": (PYPI, "https://download.pytorch.org/whl/cu126")}


def test_conda_packages_are_reported_not_resolved(tmp_path: Path) -> None:
    df = GOOD.replace("RUN useradd", "RUN micromamba install -y -c conda-forge python=3.10 pygpu=0.7.6 libgpuarray "
                      "'mkl>=2020' && useradd")
    lines = run_check(make_repo(tmp_path, df))
    assert errors(lines) == []
    assert [line for line in lines if "conda" in line] == [
        "images/myfw/Dockerfile:7: info: conda packages, not resolved by this check: python=3.10 pygpu=0.7.6 "
        "libgpuarray mkl>=2020",
        "images/myfw/Dockerfile:7: warning: conda package libgpuarray is not pinned to a version",
        "images/myfw/Dockerfile:7: warning: conda package mkl>=2020 is not pinned to a version"]


def test_conda_file_brings_its_python(tmp_path: Path) -> None:
    df = GOOD.replace("nvidia/cuda:12.6.3-cudnn-runtime-ubuntu22.04", "mambaorg/micromamba:1.5.10-bookworm-slim")
    df = df.replace("RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-pip",
                    "COPY images/myfw/conda-packages.txt /opt/conda.txt\nRUN micromamba install -y -n base -f "
                    "/opt/conda.txt")
    conda = "# conda-forge\npython=3.9.18\npygpu=0.7.6\nlibgpuarray\n"
    root = make_repo(tmp_path, df, python=None, extra={"images/myfw/conda-packages.txt": conda})
    lines = run_check(root)
    assert errors(lines) == []
    assert "images/myfw/conda-packages.txt:4: warning: conda package libgpuarray is not pinned to a version" in lines
    assert "images/myfw/Dockerfile:1: warning: framework.yaml has no `python`; using 3.9 from conda " \
           "images/myfw/conda-packages.txt" in lines
    assert [p.python for p in check_image(root, discover(root / "images")["myfw"]).pins] == ["3.9"]
    (root / "images/myfw/framework.yaml").write_text('python: "3.11"\n')
    assert errors(run_check(root)) == ["images/myfw/Dockerfile:1: error: more than one Python: 3.11 (framework.yaml); "
                                       "3.9 (conda images/myfw/conda-packages.txt)"]


def test_variants_substitute_variant_and_tag_their_findings(tmp_path: Path) -> None:
    df = GOOD.replace("ARG BASE_IMAGE", "ARG VARIANT=a\nARG BASE_IMAGE").replace(
        "COPY images/myfw/requirements.txt", "COPY images/myfw/requirements-${VARIANT}.txt")
    root = make_repo(tmp_path, df, yaml_extra="variants: [a, b]\n",
                     extra={"images/myfw/requirements-a.txt": "numpy==1.26.4\n"})
    assert errors(run_check(root)) == [
        "images/myfw/Dockerfile:6: error: COPY source 'images/myfw/requirements-b.txt' does not exist in the repo "
        "[variant b]",
        "images/myfw/Dockerfile:7: error: pip install -r /opt/lstm-bench/requirements.txt: the file is not COPYed "
        "into the image before this RUN [variant b]"]
    (root / "images/myfw/requirements-b.txt").write_text("numpy>=1\n")
    assert errors(run_check(root)) == [
        "images/myfw/requirements-b.txt:1: error: numpy>=1: not pinned with == (`>=1`) [variant b]"]


def test_variants_without_variant_arg_warn(tmp_path: Path) -> None:
    lines = run_check(make_repo(tmp_path, yaml_extra="variants: [a, b]\n"))
    assert "images/myfw/Dockerfile:1: warning: framework.yaml declares variants but the Dockerfile has no ARG " \
           "VARIANT: every variant builds the same image" in lines


def test_cli_output_and_exit_codes(tmp_path: Path) -> None:
    root = make_repo(tmp_path, requirements="torch>=2\n")
    cmd = [sys.executable, "-m", "orchestrator.dockerfile_check", "--offline", "--root", str(root)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 1, proc.stderr
    out = proc.stdout.splitlines()
    assert "images/myfw/requirements.txt:1: error: torch>=2: not pinned with == (`>=2`)" in out
    assert out[-1] == "checked 1 images (1 builds), 0 pins (not resolved: --offline): 1 errors, 1 warnings"
    proc = subprocess.run([*cmd, "nosuch"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 2 and "nosuch" in proc.stderr
    (root / "images/myfw/framework.yaml").write_text("pyton: '3.11'\n")
    assert main(["--offline", "--root", str(root)]) == 2


def test_target_tags_follow_python_and_glibc() -> None:
    tags = target_tags("3.11", (2, 35))
    for ok in ("cp311-cp311-manylinux_2_28_x86_64", "cp311-cp311-manylinux2014_x86_64", "py3-none-any",
               "cp37-abi3-manylinux_2_17_x86_64", "py3-none-manylinux1_x86_64"):
        assert Tag(*ok.split("-")) in tags, ok
    for bad in ("cp311-cp311-manylinux_2_39_x86_64", "cp312-cp312-manylinux_2_28_x86_64",
                "cp311-cp311-manylinux_2_28_aarch64", "cp311-cp311-musllinux_1_2_x86_64", "cp311-cp311-win_amd64"):
        assert Tag(*bad.split("-")) not in tags, bad
    assert Tag("cp311", "cp311", "manylinux_2_39_x86_64") in target_tags("3.11", (2, 39))


# ---------------------------------------------------------------- resolution against a local PEP 503 index

INDEX = {
    "demo-pkg": [
        ("demo_pkg-1.0.0-py3-none-any.whl", ""),
        ("demo_pkg-1.1.0-cp39-cp39-manylinux2014_x86_64.whl", ""),
        ("demo_pkg-1.2.0.tar.gz", ""),
        ("demo_pkg-1.3.0-py3-none-any.whl", ' data-yanked="broken metadata"'),
        ("demo_pkg-1.4.0-py3-none-any.whl", ' data-requires-python="&gt;=3.12"'),
        ("demo_pkg-1.5.0-cp310-cp310-manylinux_2_39_x86_64.whl", ""),
        ("demo_pkg-1.6.0-py3-none-any.whl", ' data-requires-python="not a specifier"'),
    ],
}


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def local_index(tmp_path: Path) -> Iterator[str]:
    """A static PEP 503 index served over HTTP on localhost (the HTML form other indexes use)."""
    site = tmp_path / "site"
    for project, files in INDEX.items():
        (site / "simple" / project).mkdir(parents=True)
        anchors = "".join(f'<a href="../../files/{f}#sha256=00"{attrs}>{f}</a>\n' for f, attrs in files)
        (site / "simple" / project / "index.html").write_text(f"<html><body>\n{anchors}</body></html>\n")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/simple/"
    server.shutdown()
    server.server_close()


LOCAL_CASES = [
    ("demo-pkg==1.0.0", None),
    ("demo-pkg==1.1.0", "error: demo-pkg==1.1.0: no wheel for cp310 manylinux x86_64 (glibc 2.35) and no sdist on "
                        "{index}; linux x86_64 wheels: cp39"),
    ("demo-pkg==1.2.0", "warning: demo-pkg==1.2.0: no wheel for Python 3.10 linux x86_64; pip builds the sdist "
                        "demo_pkg-1.2.0.tar.gz"),
    ("demo-pkg==1.3.0", "error: demo-pkg==1.3.0: 1.3.0 is yanked on {index}: broken metadata"),
    ("demo-pkg==1.4.0", "error: demo-pkg==1.4.0: no wheel for cp310"),
    ("demo-pkg==1.5.0", "error: demo-pkg==1.5.0: no wheel for cp310 manylinux x86_64 (glibc 2.35)"),
    ("demo-pkg==1.6.0", None),  # a malformed Requires-Python is ignored, as pip does
    ("demo-pkg==9.9.9", "error: demo-pkg==9.9.9: version 9.9.9 does not exist on {index}"),
    ("no-such-pkg==1.0", "error: no-such-pkg==1.0: no project 'no-such-pkg' on {index}"),
]


@pytest.mark.parametrize(("req", "expected"), LOCAL_CASES, ids=[c[0] for c in LOCAL_CASES])
def test_resolution_against_local_index(tmp_path: Path, local_index: str, req: str, expected: str | None) -> None:
    root = make_repo(tmp_path / "repo", requirements=f"--index-url {local_index}\n{req}\n")
    lines = [line for line in run_check(root, offline=False) if ": info: " not in line and "@sha256" not in line]
    want = [] if expected is None else ["images/myfw/requirements.txt:2: " + expected.format(index=local_index)]
    assert [line[: len(want[0])] if want else line for line in lines] == want


def test_newer_glibc_base_accepts_newer_manylinux(tmp_path: Path, local_index: str) -> None:
    # demo-pkg 1.5.0 is a cp310 manylinux_2_39 wheel: refused on Ubuntu 22.04 (LOCAL_CASES), fine on 24.04
    df = GOOD.replace("ubuntu22.04", "ubuntu24.04").replace("python3 python3-pip", "python3.10 python3.10-venv")
    root = make_repo(tmp_path, df, requirements=f"--index-url {local_index}\ndemo-pkg==1.5.0\n", python="3.10")
    assert errors(run_check(root, offline=False)) == []


def test_unreachable_index_is_not_checked_not_passed(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = make_repo(tmp_path, requirements=f"--index-url http://127.0.0.1:{port}/simple/\nnumpy==1.26.4\n")
    lines, counts = check(root)
    assert any(line.startswith("images/myfw/requirements.txt:2: warning: numpy==1.26.4: not checked (index "
                               f"unreachable): http://127.0.0.1:{port}/simple/ (") for line in lines)
    assert counts["unchecked"] == 1 and counts["error"] == 0
    assert main(["--root", str(root)]) == 0


# ---------------------------------------------------------------- resolution against PyPI (network)


@pytest.fixture(scope="session")
def pypi() -> None:
    try:
        requests.get(PYPI + "pip/", timeout=15, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    except requests.RequestException as exc:
        missing(f"PyPI unreachable: {type(exc).__name__}: {exc}")


PYPI_CASES = [
    ("3.11", "torhc==2.13.0", "error: torhc==2.13.0: no project 'torhc' on PyPI"),
    ("3.11", "numpy==1.26.99", "error: numpy==1.26.99: version 1.26.99 does not exist on PyPI"),
    ("3.11", "requests==2.32.0", "error: requests==2.32.0: 2.32.0 is yanked on PyPI: Yanked due to conflicts with "
                                 "CVE-2024-35195 mitigation"),
    # TensorFlow 2.15 has wheels for cp39..cp311 and no sdist
    ("3.12", "tensorflow==2.15.1", "error: tensorflow==2.15.1: no wheel for cp312 manylinux x86_64 (glibc 2.36) and "
                                   "no sdist on PyPI; linux x86_64 wheels: cp310, cp311, cp39"),
    ("3.11", "tensorflow==2.15.1", None),
    # mxnet 1.9.1 ships py3-none manylinux2014 wheels: they install on 3.12 (whether they import is another matter)
    ("3.12", "mxnet==1.9.1", None),
    ("3.11", "Theano==1.0.5", "warning: Theano==1.0.5: no wheel for Python 3.11 linux x86_64; pip builds the sdist "
                              "Theano-1.0.5.tar.gz"),
    ("3.11", "numpy==1.26.4", None),
    ("3.11", "torch==2.13.0", None),
]


@pytest.mark.parametrize(("python", "req", "expected"), PYPI_CASES, ids=[f"{c[1]}-py{c[0]}" for c in PYPI_CASES])
def test_resolution_against_pypi(tmp_path: Path, pypi: None, python: str, req: str, expected: str | None) -> None:
    df = GOOD.replace("nvidia/cuda:12.6.3-cudnn-runtime-ubuntu22.04", f"python:{python}.10-slim-bookworm").replace(
        "python3 python3-pip", "curl")
    lines = [line for line in run_check(make_repo(tmp_path, df, f"{req}\n", python=python), offline=False)
             if ": info: " not in line and "@sha256" not in line]
    assert lines == ([] if expected is None else [f"images/myfw/requirements.txt:1: {expected}"])


# ---------------------------------------------------------------- the real images/


@pytest.mark.parametrize("name", REAL)
def test_real_image_structure(name: str) -> None:
    lines, _ = check(ROOT, [name], offline=True)
    assert errors(lines) == []


@pytest.mark.parametrize("name", REAL)
def test_real_image_pins_resolve(pypi: None, name: str) -> None:
    lines, _ = check(ROOT, [name])
    assert errors(lines) == []


# ---------------------------------------------------------------- project parents, the shared tail, NGC, flavours

STACK = """\
ARG FLAVOUR=gpu
FROM lstm-bench/parentfw
ARG FLAVOUR
USER root
COPY images/myfw/requirements-${FLAVOUR}.txt /opt/lstm-bench/requirements.txt
RUN python3 -m pip install --no-cache-dir -r /opt/lstm-bench/requirements.txt
"""


def _parent_repo(tmp: Path, parent_reqs: str = "numpy==1.26.4\n", child_reqs: str = "six==1.17.0\n") -> Path:
    root = make_repo(tmp, STACK, extra={
        "images/myfw/requirements-gpu.txt": child_reqs, "images/myfw/requirements-cpu.txt": child_reqs,
        "images/parentfw/Dockerfile": GOOD.split("RUN useradd")[0].replace("images/myfw/requirements.txt",
                                                                           "images/parentfw/requirements.txt"),
        "images/parentfw/requirements.txt": parent_reqs,
        "images/parentfw/framework.yaml": 'python: "3.10"\n',
        "workloads/parentfw.py": "# fixture\n",
        "images/tail.Dockerfile": (ROOT / "images" / "tail.Dockerfile").read_text(),
    })
    return root


def test_from_a_project_image_inherits_its_python_and_the_tail_completes_it(tmp_path: Path) -> None:
    lines = run_check(_parent_repo(tmp_path))
    assert errors(lines) == []
    assert "images/myfw/Dockerfile:2: info: FROM project image lstm-bench/parentfw: built first by the " \
           "orchestrator, same flavour" in lines
    # No digest warning for the project image: it is built here, by content hash.
    assert not [line for line in lines if "lstm-bench/parentfw' has no @sha256" in line]


def test_a_child_pin_conflicting_with_its_parent_is_an_error(tmp_path: Path) -> None:
    lines = run_check(_parent_repo(tmp_path, child_reqs="numpy==2.4.6\n"))
    assert "images/myfw/Dockerfile:1: error: conflicting pins of numpy: 1.26.4, 2.4.6" in lines


def test_unknown_project_image_and_a_tail_finding_are_reported_where_they_are(tmp_path: Path) -> None:
    root = make_repo(tmp_path, STACK.replace("lstm-bench/parentfw", "lstm-bench/nowhere"),
                     extra={"images/myfw/requirements-gpu.txt": "six==1.17.0\n"})
    assert errors(run_check(root)) == [
        "images/myfw/Dockerfile:1: error: FROM lstm-bench/nowhere: no images/<name>/Dockerfile (or variant) of that "
        "name"]
    # The tail's own lines are reported against images/tail.Dockerfile (here: the workload file it copies is gone).
    root = _parent_repo(tmp_path / "b")
    (root / "workloads" / "myfw.py").unlink()
    assert "images/tail.Dockerfile:9: error: COPY source 'workloads/myfw.py' does not exist in the repo" in \
        errors(run_check(root))


def test_ngc_base_is_ubuntu_2204_with_python_310(tmp_path: Path) -> None:
    df = ("ARG NGC_IMAGE=nvcr.io/nvidia/mxnet:24.06-py3\nFROM ${NGC_IMAGE}\nUSER root\n"
          + (ROOT / "images" / "tail.Dockerfile").read_text())
    root = make_repo(tmp_path, df, python="3.11")
    lines = run_check(root)
    assert "images/myfw/Dockerfile:2: info: NGC base nvcr.io/nvidia/mxnet:24.06-py3: pulled from nvcr.io (public, " \
           "no login); not built or resolved by this check" in lines
    assert any("error: more than one Python: 3.10 (base nvcr.io/nvidia/mxnet:24.06-py3 (NGC 24.06: Ubuntu " \
               "22.04)); 3.11 (framework.yaml)" in line for line in lines), lines
    (root / "images/myfw/framework.yaml").write_text('python: "3.10"\n')
    assert errors(run_check(root)) == []


def test_cpu_flavour_checked_only_where_flavour_is_used(tmp_path: Path) -> None:
    root = _parent_repo(tmp_path)
    (root / "images/myfw/requirements-cpu.txt").write_text("six>=1\n")
    assert errors(run_check(root)) == [
        "images/myfw/requirements-cpu.txt:1: error: six>=1: not pinned with == (`>=1`) [flavour cpu]"]
    _, counts = check(make_repo(tmp_path / "plain"), offline=True)
    assert counts["builds"] == 1  # GOOD has no ARG FLAVOUR: one image, whatever the flavour
