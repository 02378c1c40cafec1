"""Images that start FROM other project images, the shared tail, the CPU flavour and `orchestrator build`.

Real Docker builds of tiny fixture images on the registry-free base (tests/conftest.py base_image); the workload is
the NumPy reference, so a cell in them is a real, checkable cell.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from orchestrator.frameworks import discover
from orchestrator.images import (
    TAIL_DOCKERFILE,
    BuildFailed,
    build_order,
    ensure_image,
    parse_dockerfile,
    recipe,
    with_labels,
    with_parent_tags,
)
from tests.conftest import BUILD_ARG, ROOT, TINY, copy_project, run_cli

PARENT = """\
ARG BASE_IMAGE=python:3.11.10-slim-bookworm
FROM ${BASE_IMAGE}
ARG FLAVOUR=gpu
COPY images/parent-fw/req-${FLAVOUR}.txt /opt/parent-flavour.txt
"""
CHILD = """\
ARG FLAVOUR=gpu
FROM lstm-bench/parent-fw
ARG FLAVOUR
USER root
COPY images/child-fw/note-${FLAVOUR}.txt /opt/child-flavour.txt
"""


def _fw(dest: Path, name: str, dockerfile: str, files: dict[str, str], yaml: str = "workload: numpy_reference\n"
        ) -> None:
    d = dest / "images" / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "Dockerfile").write_text(dockerfile)
    (d / "framework.yaml").write_text(yaml)
    for rel, text in files.items():
        (d / rel).write_text(text)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project copy with a parent image and a child image FROM it, both running the NumPy reference workload."""
    root = copy_project(tmp_path / "project")
    # A nonce per test: images are content-addressed and the engine outlives a test run, so without it a later run
    # would find this run's image cached and could not see a build happen.
    nonce = uuid.uuid4().hex
    _fw(root, "parent-fw", PARENT, {"req-gpu.txt": f"gpu {nonce}\n", "req-cpu.txt": f"cpu {nonce}\n"})
    _fw(root, "child-fw", CHILD, {"note-gpu.txt": "child gpu\n", "note-cpu.txt": "child cpu\n"})
    return root


def _cat(client: Any, tag: str, path: str) -> str:
    return client.containers.run(tag, entrypoint=["cat", path], remove=True).decode()


# ---------------------------------------------------------------- without Docker


def test_tail_is_appended_only_to_a_dockerfile_without_entrypoint(project: Path) -> None:
    fws = discover(project / "images")
    r = recipe(project, fws, fws["numpy-reference"], None, "cpu", {})
    assert r.text.endswith((project / TAIL_DOCKERFILE).read_text())
    assert r.args == {"FLAVOUR": "cpu", "WORKLOAD": "numpy_reference"}
    complete = "FROM x:1\nENTRYPOINT [\"python3\", \"-m\", \"workloads.numpy_reference\"]\n"
    _fw(project, "complete", complete, {})
    r = recipe(project, discover(project / "images"), discover(project / "images")["complete"], None, "gpu", {})
    assert r.text == complete and "WORKLOAD" not in r.args


def test_parents_come_first_and_keras_variants_find_their_backend() -> None:
    fws = discover(ROOT / "images")
    wanted = [("keras", v) for v in ("torch", "jax", "tensorflow")] + [("pytensor", None), ("keras-theano", None),
                                                                        ("flax", None)]
    order = [(r.framework.name, r.variant) for r in build_order(ROOT, fws, wanted, "cpu", {})]
    for child, parent in [(("keras", "torch"), ("torch", None)), (("keras", "jax"), ("jax", None)),
                          (("keras", "tensorflow"), ("tensorflow", None)), (("pytensor", None), ("jax", None)),
                          (("flax", None), ("jax", None)),
                          (("keras-theano", None), ("theano", None))]:
        assert order.index(parent) < order.index(child), order
    assert order.count(("jax", None)) == 1  # a shared parent is built once


def test_variants_share_the_image_of_a_dockerfile_that_ignores_variant(project: Path) -> None:
    _fw(project, "plain-fw", "FROM x:1\nENTRYPOINT [\"python3\"]\n", {}, "variants: [a, b]\n")
    _fw(project, "varied-fw", "ARG VARIANT=a\nFROM x:1\nENTRYPOINT [\"python3\"]\n", {}, "variants: [a, b]\n")
    fws = discover(project / "images")
    plain = [recipe(project, fws, fws["plain-fw"], v, "cpu", {}) for v in ("a", "b")]
    assert [r.args for r in plain] == [{"FLAVOUR": "cpu"}] * 2  # one hash: built once, run by both variants
    varied = [recipe(project, fws, fws["varied-fw"], v, "cpu", {}).args.get("VARIANT") for v in ("a", "b")]
    assert varied == ["a", "b"]


def test_labels_are_one_instruction_at_the_end() -> None:
    text = with_labels("FROM a AS x\nFROM b\nUSER 1\n\n", {"lstm-bench.z": "1", "lstm-bench.a": 'say "hi"'})
    assert text == 'FROM a AS x\nFROM b\nUSER 1\nLABEL "lstm-bench.a"="say \\"hi\\"" "lstm-bench.z"="1"\n'
    assert [i.keyword for i in parse_dockerfile(text)] == ["FROM", "FROM", "USER", "LABEL"]


def test_from_rewritten_to_the_parent_tag(project: Path) -> None:
    fws = discover(project / "images")
    r = recipe(project, fws, fws["child-fw"], None, "cpu", {})
    assert [(fw.name, v) for fw, v in r.parents] == [("parent-fw", None)] and r.bases == ()
    text = with_parent_tags(r.text, r.args, fws, {("parent-fw", None): "lstm-bench/parent-fw:cpu-0123"})
    assert "FROM lstm-bench/parent-fw:cpu-0123\n" in text and "FROM lstm-bench/parent-fw\n" not in text


def test_a_cycle_and_an_unknown_project_image_are_refused(project: Path) -> None:
    _fw(project, "a-fw", "FROM lstm-bench/b-fw\n", {})
    _fw(project, "b-fw", "FROM lstm-bench/a-fw\n", {})
    _fw(project, "lost-fw", "FROM lstm-bench/nowhere\n", {})
    fws = discover(project / "images")
    with pytest.raises(ValueError, match="cycle: lstm-bench/a-fw -> lstm-bench/b-fw -> lstm-bench/a-fw"):
        build_order(project, fws, [("a-fw", None)], "gpu", {})
    with pytest.raises(BuildFailed, match="FROM lstm-bench/nowhere: no images/<name>/Dockerfile"):
        ensure_image(None, project, fws["lost-fw"], None, {}, 60, frameworks=fws)


# ---------------------------------------------------------------- real builds


@pytest.mark.docker
def test_child_is_built_after_its_parent_and_follows_its_id(docker_client: Any, base_image: str, project: Path) -> None:
    args = {"BASE_IMAGE": base_image}
    fws = discover(project / "images")
    child = ensure_image(docker_client, project, fws["child-fw"], None, args, 900, flavour="cpu")
    assert not child.cached and child.tag.startswith("lstm-bench/child-fw:cpu-")
    (parent_tag,) = child.parents
    assert parent_tag.startswith("lstm-bench/parent-fw:cpu-")
    # The child holds the parent's layers (its CPU file) and its own; the tail made it a runnable image.
    assert _cat(docker_client, child.tag, "/opt/parent-flavour.txt").startswith("cpu ")
    assert _cat(docker_client, child.tag, "/opt/child-flavour.txt") == "child cpu\n"
    config = docker_client.images.get(child.tag).attrs["Config"]
    assert config["User"] == "10001" and config["Env"].count("LSTM_BENCH_WORKLOAD=numpy_reference") == 1
    labels = docker_client.images.get(child.tag).labels
    assert labels["lstm-bench.flavour"] == "cpu" and labels["lstm-bench.framework"] == "child-fw"
    assert labels["lstm-bench.managed"] == "true" and child.tag.endswith(labels["lstm-bench.content-hash"][:16])
    # The labels are one instruction of the child's own steps, not one step (and one layer commit) per label.
    own = docker_client.api.history(child.tag)[:-len(docker_client.api.history(parent_tag))]
    assert [h["CreatedBy"].count("LABEL") for h in own if "LABEL" in h["CreatedBy"]] == [1], own
    again = ensure_image(docker_client, project, fws["child-fw"], None, args, 900, flavour="cpu")
    assert again.cached and again.tag == child.tag
    # A changed parent is rebuilt, and the child with it: its hash is keyed on the parent's id.
    changed = (project / "images" / "parent-fw" / "req-cpu.txt").read_text().replace("cpu ", "cpu, changed ")
    (project / "images" / "parent-fw" / "req-cpu.txt").write_text(changed)
    rebuilt = ensure_image(docker_client, project, fws["child-fw"], None, args, 900, flavour="cpu")
    assert not rebuilt.cached and rebuilt.tag != child.tag and rebuilt.parents != child.parents
    assert _cat(docker_client, rebuilt.tag, "/opt/parent-flavour.txt") == changed


@pytest.mark.docker
def test_flavours_are_separate_images_from_their_own_requirements(docker_client: Any, base_image: str,
                                                                  project: Path) -> None:
    fws = discover(project / "images")
    gpu = ensure_image(docker_client, project, fws["parent-fw"], None, {"BASE_IMAGE": base_image}, 900)
    cpu = ensure_image(docker_client, project, fws["parent-fw"], None, {"BASE_IMAGE": base_image}, 900,
                       flavour="cpu")
    assert gpu.tag.startswith("lstm-bench/parent-fw:gpu-") and cpu.tag.startswith("lstm-bench/parent-fw:cpu-")
    assert gpu.image_id != cpu.image_id
    assert _cat(docker_client, gpu.tag, "/opt/parent-flavour.txt").startswith("gpu ")
    assert _cat(docker_client, cpu.tag, "/opt/parent-flavour.txt").startswith("cpu ")
    with pytest.raises(ValueError, match="flavour 'tpu'"):
        ensure_image(docker_client, project, fws["parent-fw"], None, {}, 900, flavour="tpu")


@pytest.mark.docker
def test_build_command_builds_without_running_and_a_cpu_run_records_the_flavour(base_image: str, project: Path,
                                                                                 tmp_path: Path) -> None:
    proc = run_cli(["build", "matrix.yaml", "--only", "child-fw", "--device", "cpu", "--build-arg", BUILD_ARG],
                   cwd=project, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "child-fw" in proc.stdout and "lstm-bench/child-fw:cpu-" in proc.stdout
    assert not (project / "reports").exists()  # no run, no cell
    out = tmp_path / "run"
    proc = run_cli(["matrix.yaml", "--only", "child-fw", "--hidden", "8", "--device", "cpu", "--build-arg", BUILD_ARG,
                    "--out", str(out), "--no-report", *TINY], cwd=project, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (record,) = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert record["status"] == "ok", record
    assert record["image"]["flavour"] == "cpu" and record["image"]["cached"] is True
    assert record["image"]["parents"][0].startswith("lstm-bench/parent-fw:cpu-")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["environments"]["child-fw"]["image"]["flavour"] == "cpu"


def test_build_command_bad_input_is_one_line_exit_2(project: Path) -> None:
    proc = run_cli(["build", "matrix.yaml", "--only", "child-fw", "--push", "a b"], cwd=project)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "--push 'a b': expected a registry" in proc.stderr
    proc = run_cli(["build", "matrix.yaml", "--only", "nope"], cwd=project)
    assert proc.returncode == 2 and "unknown framework 'nope'" in proc.stderr


@pytest.mark.docker
def test_build_command_pushes_to_a_registry(base_image: str, project: Path, registry: str) -> None:
    import requests

    target = f"{registry}/t"
    built = run_cli(["build", "matrix.yaml", "--only", "parent-fw", "--device", "cpu", "--build-arg", BUILD_ARG,
                     "--push", target], cwd=project, timeout=900)
    assert built.returncode == 0, built.stdout + built.stderr
    tags = requests.get(f"http://{registry}/v2/t/lstm-bench/parent-fw/tags/list", timeout=5).json()
    assert [t for t in tags["tags"] if t.startswith("cpu-")], tags
    assert f"{target}/lstm-bench/parent-fw:cpu-" in built.stdout
