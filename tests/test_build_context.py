"""The build context (issue 17): no link is followed (two links to "." made the context walk loop while memory
grew), the build time limit covers assembling it, and big files are hashed and tarred streamed, never read whole.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from orchestrator.frameworks import discover
from orchestrator.images import context_files, ensure_image, parse_dockerfile
from tests.conftest import BUILD_ARG, ROOT

LOOP_DOCKERFILE = "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY images/loopfw/ctx/loop/** /x/\nENTRYPOINT [\"true\"]\n"


def loop_project(root: Path) -> Path:
    loop = root / "images" / "loopfw" / "ctx" / "loop"
    loop.mkdir(parents=True)
    (loop / "file.txt").write_text("x")
    os.symlink(".", loop / "a")
    os.symlink(".", loop / "b")
    (root / "images" / "loopfw" / "Dockerfile").write_text(LOOP_DOCKERFILE)
    return root


def test_a_context_with_links_to_itself_is_walked_once_without_following_them(tmp_path: Path) -> None:
    root = loop_project(tmp_path)
    files = context_files(root, parse_dockerfile(LOOP_DOCKERFILE), {}, deadline=time.monotonic() + 60)
    assert [str(f) for f in files] == [f"images/loopfw/ctx/loop/{n}" for n in ("a", "b", "file.txt")]
    with pytest.raises(TimeoutError):  # the build time limit covers the walk
        context_files(root, parse_dockerfile(LOOP_DOCKERFILE), {}, deadline=time.monotonic() - 1)


@pytest.mark.docker
def test_a_context_with_links_to_itself_builds_on_the_engine(
    docker_client: Any, base_image: str, tmp_path: Path
) -> None:
    root = loop_project(tmp_path)
    fw = discover(root / "images")["loopfw"]
    built = ensure_image(docker_client, root, fw, None, dict([BUILD_ARG.split("=", 1)]), 60, flavour="cpu")
    try:
        assert not built.cached
    finally:
        docker_client.images.remove(built.tag, force=True)


HASH_AND_TAR = """
import sys
from pathlib import Path
from orchestrator.images import build_context, content_hash
root, rel = Path(sys.argv[1]), [Path("big.bin")]
content_hash(root, rel, {}, [])
with build_context(root, rel) as tar:
    tar.seek(0, 2)
    assert tar.tell() > (768 << 20)
# VmHWM: this process image's own peak. ru_maxrss would also count the parent's pages the child held between fork and
# exec (Linux carries that into the rusage), i.e. pytest's size, not this code's.
print(next(int(line.split()[1]) << 10 for line in open("/proc/self/status") if line.startswith("VmHWM:")))
"""


def test_a_big_context_file_is_hashed_and_tarred_streamed(tmp_path: Path) -> None:
    with (tmp_path / "big.bin").open("wb") as f:
        f.truncate(768 << 20)  # sparse: no disk for the input, the tar's copy lives in a temporary file
    proc = subprocess.run([sys.executable, "-c", HASH_AND_TAR, str(tmp_path)], cwd=ROOT, capture_output=True,
                          text=True, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert int(proc.stdout) < 256 << 20, f"peak RSS {int(proc.stdout) >> 20} MiB for a 768 MiB context file"
