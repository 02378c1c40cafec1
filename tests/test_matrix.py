"""The matrix loader: schema, file:line errors, overrides, expansion into cells."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.errors import InputError
from orchestrator.frameworks import discover
from orchestrator.matrix import load_matrix, parse_matrix, parse_set
from orchestrator.plan import expand

ROOT = Path(__file__).resolve().parent.parent


def test_root_matrix_is_the_original_experiment() -> None:
    m = load_matrix(ROOT / "matrix.yaml")
    assert m.hidden == (128, 256, 512, 1024, 2048)
    assert (m.batch, m.seq_len, m.vocab, m.classes, m.warmup, m.iters) == (128, 64, 10000, 5, 2, 50)
    assert m.device == "gpu"
    assert m.frameworks == "all"  # every folder under images/, the 2016 rows first (tests/test_adding_a_framework.py)
    names = list(dict.fromkeys(c.framework for c in expand(m, discover(ROOT / "images")).cells))
    # mxnet-ngc continues the mxnet row (NGC's build of the same MXNet, for Hopper), so it sits beside it.
    assert names[:7] == ["theano", "tensorflow", "mxnet", "mxnet-ngc", "torch", "keras-theano", "keras"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "frameworks: [numpy-reference]\nhidden: [16, -3]\n",
            "m.yaml:2: key 'hidden.1': Input should be greater than 0",
        ),
        ("frameworks: [numpy-reference]\nhiden: [16]\n", "m.yaml:2: key 'hiden': Extra inputs are not permitted"),
        ("frameworks: [numpy-reference]\nbatch: lots\n", "m.yaml:2: key 'batch'"),
        ("frameworks: [a, a]\n", "framework listed twice: a"),
        ("frameworks: []\n", "expected at least one framework"),
        ("frameworks: [numpy-reference]\nhidden: []\n", "key 'hidden'"),
        ("frameworks: [numpy-reference]\nmemory: lots\n", "key 'memory': Value error, expected a size like 512m"),
        ("frameworks: [numpy-reference]\ndevice: tpu\n", "m.yaml:2: key 'device'"),
        ("frameworks: ['../etc']\n", "m.yaml:1: key 'frameworks.0.name'"),
        ("- just\n- a list\n", "m.yaml:1: expected a mapping"),
        ("frameworks: [a\n", "m.yaml:2: not valid YAML"),
        ("", "the matrix is empty"),
    ],
)
def test_bad_input_is_one_line_with_file_line_and_key(text: str, expected: str) -> None:
    with pytest.raises(InputError) as exc:
        parse_matrix(text, "m.yaml")
    message = str(exc.value)
    assert expected in message
    assert "\n" not in message


def test_nested_errors_point_at_the_right_line() -> None:
    text = "name: x\nframeworks:\n  - numpy-reference\n  - name: keras\n    variants: [jax]\n    colour: red\n"
    with pytest.raises(InputError, match=r"m.yaml:6: key 'frameworks.1.colour'"):
        parse_matrix(text, "m.yaml")


def test_overrides_win_and_are_blamed_on_the_command_line() -> None:
    m = parse_matrix("frameworks: all\nbatch: 128\n", "m.yaml", parse_set(["batch=4", "lr=0.5", "memory=256m"]))
    assert (m.batch, m.lr, m.memory) == (4, 0.5, "256m")
    with pytest.raises(InputError, match="command line: key 'batch'"):
        parse_matrix("frameworks: all\n", "m.yaml", parse_set(["batch=-1"]))
    with pytest.raises(InputError, match="unknown key"):
        parse_set(["colour=red"])
    with pytest.raises(InputError, match="expected KEY=VALUE"):
        parse_set(["batch"])


def test_set_impls_takes_default_all_or_a_list_as_docs_matrix_says() -> None:
    base = "frameworks: [torch]\nhidden: [8]\n"
    assert parse_matrix(base, "m.yaml", parse_set(["impls=all"])).impls == "all"
    assert parse_matrix(base, "m.yaml", parse_set(["impls=default"])).impls == "default"
    assert parse_matrix(base, "m.yaml", parse_set(["impls=[loop, fused]"])).impls == ("loop", "fused")
    with pytest.raises(InputError, match="command line: key 'impls'"):
        parse_matrix(base, "m.yaml", parse_set(["impls=3"]))


def test_anchor_bomb_is_refused_quickly() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        prev = f"*a{i - 1}"
        lines.append(f"a{i}: &a{i} [{', '.join([prev] * 10)}]")
    with pytest.raises(InputError, match="too large"):
        parse_matrix("\n".join(lines) + "\n", "bomb.yaml")


def test_expand_frameworks_variants_impls_and_repeats() -> None:
    available = discover(ROOT / "tests" / "fixtures")
    m = parse_matrix("frameworks: ['chaos:ok', broken]\nhidden: [8, 16]\nrepeats: 2\n", "m.yaml")
    plan = expand(m, available)
    ids = [c.cell_id for c in plan.cells]
    assert ids == [
        "chaos-ok-h8-r0",
        "chaos-ok-h8-r1",
        "chaos-ok-h16-r0",
        "chaos-ok-h16-r1",
        "broken-h8-r0",
        "broken-h8-r1",
        "broken-h16-r0",
        "broken-h16-r1",
    ]
    assert plan.cells[0].params(m)["variant"] == "ok"
    every = expand(parse_matrix("frameworks: [chaos]\nhidden: [8]\n", "m.yaml"), available)
    assert len(every.cells) == len(available["chaos"].meta.variants)


def test_expand_refuses_unknown_frameworks_and_variants() -> None:
    available = discover(ROOT / "tests" / "fixtures")
    with pytest.raises(InputError, match="unknown framework 'nope'"):
        expand(parse_matrix("frameworks: [nope]\n", "m.yaml"), available)
    with pytest.raises(InputError, match="unknown variant"):
        expand(parse_matrix("frameworks: ['chaos:nope']\n", "m.yaml"), available)
    with pytest.raises(InputError, match="declares no variants"):
        expand(parse_matrix("frameworks: ['broken:x']\n", "m.yaml"), available)


def test_expand_refuses_an_impl_no_framework_declares() -> None:
    available = discover(ROOT / "images")
    # Declared by torch only: the other frameworks run their default, as documented.
    plan = expand(parse_matrix("frameworks: [torch, jax]\nimpls: [compiled]\n", "m.yaml"), available)
    jax_default = available["jax"].meta.impls[0]
    assert {(c.framework, c.impl) for c in plan.cells} == {("torch", "compiled"), ("jax", jax_default)}
    with pytest.raises(InputError, match=r"impls: 'compild' is no framework's impl \(declared in .*compiled"):
        expand(parse_matrix("frameworks: [torch]\nimpls: [compild, loop]\n", "m.yaml"), available)
