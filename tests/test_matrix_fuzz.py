"""Any matrix file gives a valid Matrix or one InputError line naming the file, never another exception.

Property tests (hypothesis) over YAML dumped from random JSON-like documents, matrix-shaped documents with
random values, YAML-ish token soup and arbitrary text; then the hostile cases explicitly, and the CLI's answer.
"""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.errors import InputError
from orchestrator.frameworks import NAME_RE, discover
from orchestrator.matrix import MAX_MATRIX_BYTES, Matrix, parse_matrix
from orchestrator.plan import expand
from tests.conftest import FIXTURES, ROOT, copy_project, run_cli

SOURCE = "fuzz dir/m.yaml"  # a space too: the name must come out as given
FIELDS = list(Matrix.model_fields)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=24)
    | st.sampled_from(["all", "default", "gpu", "cpu", "16g", "512m", "0", "numpy-reference", "chaos:ok"])
)
documents = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10) | st.sampled_from(FIELDS), inner),
    max_leaves=40,
)
matrix_like = st.dictionaries(st.sampled_from([*FIELDS, "hiden", "variants", ""]), documents, max_size=8)
yaml_soup = st.lists(
    st.sampled_from(
        [
            ":",
            "- ",
            "[",
            "]",
            "{",
            "}",
            ",",
            "&a ",
            "*a",
            "!!str ",
            "!!python/object ",
            "|",
            ">",
            "'",
            '"',
            "#",
            "%YAML 1.1",
            "---",
            "...",
            "\n",
            "  ",
            "\t",
            "frameworks",
            "hidden",
            "16",
            "-3",
            "1e999",
            "~",
            "null",
            "yes",
            "\\x00",
            "\x00",
            "\ud7ff",
            "é",
            "<<: *a",
            "? ",
            "@",
            "`",
        ]
    ),
    max_size=40,
).map("".join)


def check(text: str) -> Matrix | None:
    """The property: a Matrix whose invariants hold, or an InputError of one line that names the file."""
    try:
        m = parse_matrix(text, SOURCE)
    except InputError as exc:
        message = str(exc)
        assert message.startswith(SOURCE), message
        assert message.isprintable(), repr(message)  # no newline, carriage return or other control character
        return None
    assert all(isinstance(h, int) and h > 0 for h in m.hidden) and len(set(m.hidden)) == len(m.hidden)
    assert min(m.batch, m.seq_len, m.vocab, m.iters, m.repeats, m.slots, m.pids_limit) > 0
    assert m.classes >= 2 and m.warmup >= 0 and m.lr > 0 and m.timeout_s > 0
    if m.frameworks != "all":
        names = [f.name for f in m.frameworks]
        assert names and len(set(names)) == len(names) and all(NAME_RE.match(n) for n in names)
    return m


@FUZZ
@given(documents)
def test_any_json_like_document(doc: Any) -> None:
    check(yaml.safe_dump(doc))


@FUZZ
@given(matrix_like)
def test_matrix_shaped_documents_with_random_values(doc: dict[str, Any]) -> None:
    check(yaml.safe_dump(doc, default_flow_style=False))


@FUZZ
@given(yaml_soup)
def test_yaml_token_soup(text: str) -> None:
    check(text)


@FUZZ
@given(st.text(max_size=300))
def test_arbitrary_text(text: str) -> None:
    check(text)


def test_a_good_document_survives_the_property() -> None:
    # The property accepts valid input too: it is not merely "everything raises".
    m = check("frameworks: [numpy-reference, {name: chaos, variants: [ok]}]\nhidden: [16, 32]\nbatch: 4\n")
    assert m is not None and m.hidden == (16, 32) and m.batch == 4


# ---------------------------------------------------------------------------------------------- explicit cases


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "the matrix is empty"),
        ("# only a comment\n", "the matrix is empty"),
        ("42\n", "expected a mapping of keys, got int"),
        ("frameworks: numpy-reference\n", "key 'frameworks'"),
        ("frameworks: [numpy-reference]\nhidden: 16\n", "key 'hidden'"),
        ("frameworks: [numpy-reference]\nbatch: [4]\n", "key 'batch'"),
        ("frameworks: [numpy-reference]\nlr: fast\n", "key 'lr'"),
        ("frameworks: [numpy-reference]\ndevice: [gpu]\n", "key 'device'"),
        ("frameworks: [{name: numpy-reference, colour: red}]\n", "key 'frameworks.0.colour'"),
        ("frameworks: [numpy-reference]\ncolour: red\n", "key 'colour': Extra inputs are not permitted"),
        ("frameworks: [numpy-reference]\nhidden: [0]\n", "key 'hidden.0': Input should be greater than 0"),
        ("frameworks: [numpy-reference]\nbatch: 0\n", "key 'batch': Input should be greater than 0"),
        ("frameworks: [numpy-reference]\nseq_len: -64\n", "key 'seq_len'"),
        ("frameworks: [numpy-reference]\ntimeout_s: -1\n", "key 'timeout_s'"),
        ("frameworks: [numpy-reference]\nwarmup: -1\n", "key 'warmup'"),
        ("frameworks: [numpy-reference]\nmemory: -5g\n", "key 'memory'"),
        ("frameworks: [numpy-reference]\nhidden: [16, 16]\n", "values must be unique"),
        ("frameworks: [a, b, a]\n", "framework listed twice: a"),
        ("frameworks: [{name: chaos, variants: []}]\n", "key 'frameworks.0.variants'"),
        ("frameworks: [{name: chaos, variants: [ok, ok]}]\n", "each listed once"),
        ("frameworks: [chaos]\nimpls: [loop, loop]\n", "key 'impls': Value error, values must be unique"),
        ("frameworks: ['chaos:ok', 'chaos:crash']\n", "framework listed twice: chaos"),
        # Keys echoed in the message keep it one line even when they hold control characters.
        ('frameworks: [numpy-reference]\n"bell\\x07": 1\n', "key 'bell\\x07'"),
        ('frameworks: [numpy-reference]\n"a\\rb\\nc": 1\n', "key 'a\\rb\\nc'"),
        ("[" * 5000 + "]" * 5000, "too deeply nested"),
        ("{a: " * 3000 + "1" + "}" * 3000, "too deeply nested"),
        ("- " * 3000 + "x\n", "too deeply nested"),
        ("hidden: [" + ", ".join(str(i) for i in range(1, 30_000)) + "]\n", "over 20000 nodes"),
        ("x: '" + "a" * MAX_MATRIX_BYTES + "'\n", f"larger than {MAX_MATRIX_BYTES} bytes"),
        ("hidden: !!python/object/apply:os.system [id]\n", "not valid YAML"),
    ],
)
def test_hostile_and_wrong_documents(text: str, expected: str) -> None:
    with pytest.raises(InputError) as exc:
        parse_matrix(text, SOURCE)
    message = str(exc.value)
    assert message.startswith(SOURCE) and expected in message, message
    assert message.isprintable(), repr(message)


BOMB = "\n".join(
    ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    + [f"{c}: &{c} [{', '.join(['*' + p] * 9)}]" for p, c in zip("abcdefgh", "bcdefghi", strict=True)]
    + ["frameworks: *i"]
)  # 9**9 (387 million) leaves once expanded


def test_billion_laughs_is_refused_in_bounded_time_and_memory() -> None:
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(InputError, match="too large or too deeply nested"):
            parse_matrix(BOMB, SOURCE)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 5, f"{elapsed:.1f} s"
    assert peak < 50 << 20, f"{peak >> 20} MiB"


def test_unknown_framework_is_refused_at_expand_time() -> None:
    m = parse_matrix("frameworks: [numpy-reference, no-such-framework]\n", SOURCE)  # the schema cannot know
    with pytest.raises(InputError, match=r"unknown framework 'no-such-framework': no images/no-such-framework/"):
        expand(m, discover(ROOT / "images"))


# ---------------------------------------------------------------------------------------------- the CLI


@pytest.mark.parametrize(
    "content",
    [
        b"frameworks: [numpy-reference]\nhidden: [0]\n",
        b"[" * 5000 + b"]" * 5000,
        BOMB.encode(),
        b"frameworks: [numpy-reference]\n'line\nbreak': 1\n",
        b"\xff\xfe\x00garbage that is not UTF-8\x80\n",
        b"frameworks: [no-such-framework]\n",
        None,  # the matrix path is a directory
    ],
)
def test_cli_bad_matrix_exits_2_with_one_line(content: bytes | None, tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    proc = run_cli([str(path), "--out", str(tmp_path / "run")], timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert not (tmp_path / "run").exists()


def test_cli_only_merges_variants_of_one_framework(tmp_path: Path) -> None:
    """`--only chaos:ok,chaos:crash` is one framework with two variants, each cell once; a bare name means all."""
    project = copy_project(tmp_path / "project", {"chaos": FIXTURES / "chaos"})
    (project / "m.yaml").write_text("frameworks: [numpy-reference]\ndevice: cpu\nhidden: [16]\n")
    proc = run_cli(["m.yaml", "--only", "chaos:ok,chaos:crash,chaos:ok", "--dry-run"], cwd=project)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["chaos:ok hidden=16", "chaos:crash hidden=16"]
    every = run_cli(["m.yaml", "--only", "chaos:ok,chaos", "--dry-run"], cwd=project)
    assert every.returncode == 0, every.stderr
    assert len(every.stdout.splitlines()) == len(discover(FIXTURES)["chaos"].meta.variants)
