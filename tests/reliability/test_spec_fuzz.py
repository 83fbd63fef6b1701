"""Issue 16, item 3: spec fuzzing over every spec of ../shared/corpus and specs/.

Hypothesis (derandomized: the same cases on every run) mutates real spec files (deleted,
duplicated and swapped lines, wrong types, out-of-range numbers, unknown fields, truncation,
random bytes, non-UTF-8 bytes, NUL bytes, typographic quotes, CRLF, tabs, a byte-order mark)
and runs ``tltk <model> validate_spec -e FILE`` in this process on each.  Every case must end
with exit code 0 or 2, never a traceback; every error line must name the file, and carry
``file:line:col`` or the field path; targeted mutations (a wrong type, an out-of-range integer,
an unknown field) must be reported at their line with the field's name; layout changes (CRLF,
tabs, typographic quotes, BOM) must not change the verdict.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

#: Cases per run: the default suite and the long variant.
DEFAULT_CASES = 400
LONG_CASES = 6000

PROFILE = dict(derandomize=True, database=None, deadline=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                      HealthCheck.data_too_large])

CORPUS_KINDS = {"detectnet_v2_train": "detectnet_v2", "detectnet_v2_infer": "detectnet_v2",
                "detectnet_v2_convert": "detectnet_v2", "mask_rcnn_train": "mask_rcnn"}
FILE_LEVEL = ("not UTF-8", "binary file", "looks like", "is a folder", "file is ", "file not found",
              "cannot read")


def _shared() -> Path | None:
    import os

    here = Path(__file__).resolve().parents[2]
    for candidate in ([Path(os.environ["TLTK_SHARED"])] if os.environ.get("TLTK_SHARED") else []) + [here.parent / "shared"]:
        if (candidate / "corpus").is_dir():
            return candidate
    return None


def spec_files() -> list[tuple[Path, str]]:
    """Every protobuf-text spec of the corpus (when present) and of specs/, with its model."""
    repo = Path(__file__).resolve().parents[2]
    found = [(p, p.parent.name) for p in sorted((repo / "specs").glob("*/*.txt"))]
    shared = _shared()
    if shared is not None:
        for folder, model in CORPUS_KINDS.items():
            found += [(p, model) for p in sorted((shared / "corpus" / folder).glob("*")) if p.is_file()]
    return found


FILES = spec_files()


@functools.cache
def field_kinds(model: str) -> dict[str, set[str]]:
    """Field name -> the kinds of value it takes anywhere in the model's schemas
    (``int``, ``uint``, ``float``, ``string``, ``bool``, ``enum``, ``message``)."""
    import importlib

    from google.protobuf.descriptor import FieldDescriptor as F

    module = importlib.import_module(f"tltk._proto.{model}_pb2")
    kinds: dict[str, set[str]] = {}
    seen: set[str] = set()
    stack = list(module.DESCRIPTOR.message_types_by_name.values())
    while stack:
        desc = stack.pop()
        if desc.full_name in seen:
            continue
        seen.add(desc.full_name)
        stack.extend(desc.nested_types)
        for fd in desc.fields:
            if fd.message_type is not None:
                kind = "message"
                stack.append(fd.message_type)
            elif fd.type == F.TYPE_ENUM:
                kind = "enum"
            elif fd.type == F.TYPE_BOOL:
                kind = "bool"
            elif fd.type in (F.TYPE_STRING, F.TYPE_BYTES):
                kind = "string"
            elif fd.type in (F.TYPE_FLOAT, F.TYPE_DOUBLE):
                kind = "float"
            elif fd.cpp_type in (F.CPPTYPE_UINT32, F.CPPTYPE_UINT64):
                kind = "uint"
            else:
                kind = "int"
            kinds.setdefault(fd.name, set()).add(kind)
    return kinds


# ---- mutations -------------------------------------------------------------------------------------

@dataclass
class Expect:
    """What a mutated file must give.

    Attributes:
        kind: ``"any"`` (exit 0 or 2), ``"error"`` (exit 2), ``"same"`` (the base file's exit code).
        line: 1-based line an error must be reported at (``file:line:``), or 0.
        needle: text the output must contain (a field name, ``not UTF-8``...), or "".
    """

    kind: str = "any"
    line: int = 0
    needle: str = ""


Mutation = Callable[[Any, bytes, str, bool], tuple[bytes, Expect]]
_FIELD_LINE = re.compile(r"^(?P<indent>\s*)(?P<name>[A-Za-z_]\w*)\s*:\s*(?P<value>\"[^\"\\]*\"|'[^'\\]*'|[\w.+-]+)\s*$")


def _lines(base: bytes) -> list[bytes]:
    return base.split(b"\n")


def delete_line(data: Any, base: bytes, model: str, valid: bool) -> tuple[bytes, Expect]:
    lines = _lines(base)
    i = data.draw(st.integers(0, len(lines) - 1), label="line")
    return b"\n".join(lines[:i] + lines[i + 1:]), Expect()


def duplicate_line(data: Any, base: bytes, model: str, valid: bool) -> tuple[bytes, Expect]:
    lines = _lines(base)
    i = data.draw(st.integers(0, len(lines) - 1), label="line")
    return b"\n".join(lines[:i + 1] + lines[i:]), Expect()


def swap_lines(data: Any, base: bytes, model: str, valid: bool) -> tuple[bytes, Expect]:
    lines = _lines(base)
    i = data.draw(st.integers(0, len(lines) - 1), label="first")
    j = data.draw(st.integers(0, len(lines) - 1), label="second")
    lines[i], lines[j] = lines[j], lines[i]
    return b"\n".join(lines), Expect()


def truncate(data: Any, base: bytes, model: str, valid: bool) -> tuple[bytes, Expect]:
    cut = data.draw(st.integers(0, max(len(base) - 1, 0)), label="cut")
    return base[:cut], Expect()


def random_bytes(data: Any, base: bytes, model: str, valid: bool) -> tuple[bytes, Expect]:
    return data.draw(st.binary(max_size=400), label="bytes"), Expect()


def random_text_line(data: Any, base: bytes, model: str, valid: bool) -> tuple[bytes, Expect]:
    lines = _lines(base)
    i = data.draw(st.integers(0, len(lines)), label="line")
    text = data.draw(st.text(max_size=40), label="text").encode("utf-8", errors="surrogatepass")
    return b"\n".join(lines[:i] + [text] + lines[i:]), Expect()


def non_utf8(data: Any, base: bytes, model: str, valid: bool) -> tuple[bytes, Expect]:
    at = data.draw(st.integers(0, len(base)), label="offset")
    bad = data.draw(st.sampled_from([b"\xff", b"\xfe\xfe", b"\xc3\x28", b"\xe9t\xe9", b"\x80abc"]), label="bytes")
    return base[:at] + bad + base[at:], Expect("error", needle="not UTF-8")


def nul_byte(data: Any, base: bytes, model: str, valid: bool) -> tuple[bytes, Expect]:
    at = data.draw(st.integers(0, len(base)), label="offset")
    return base[:at] + b"\x00" + base[at:], Expect("error", needle="binary file")


def _field_lines(base: bytes) -> list[tuple[int, re.Match[str]]]:
    text = base.decode("utf-8", errors="replace").split("\n")
    return [(i, m) for i, line in enumerate(text) if (m := _FIELD_LINE.match(line))]


def wrong_type(data: Any, base: bytes, model: str, valid: bool) -> tuple[bytes, Expect]:
    candidates = _field_lines(base)
    if not candidates:
        return truncate(data, base, model, valid)
    i, match = data.draw(st.sampled_from(candidates), label="field line")
    value = match.group("value")
    replacement = "12345" if value[0] in "\"'" else '"a string"'
    lines = base.decode("utf-8").split("\n")
    lines[i] = f"{match.group('indent')}{match.group('name')}: {replacement}"
    name = match.group("name")
    kinds = field_kinds(model).get(name, set())
    accepted = {"int", "uint", "float", "enum"} if replacement == "12345" else {"string"}
    targeted = valid and kinds and not kinds & (accepted | {"message"}) and name not in ("key", "value")
    if targeted:
        return "\n".join(lines).encode("utf-8"), Expect("error", i + 1, name)
    return "\n".join(lines).encode("utf-8"), Expect()


def out_of_range(data: Any, base: bytes, model: str, valid: bool) -> tuple[bytes, Expect]:
    candidates = [(i, m) for i, m in _field_lines(base) if re.fullmatch(r"-?\d+", m.group("value"))]
    if not candidates:
        return delete_line(data, base, model, valid)
    i, match = data.draw(st.sampled_from(candidates), label="integer line")
    name = match.group("name")
    huge = data.draw(st.sampled_from(["99999999999999999999999", "-99999999999999999999999", "4294967296",
                                      "-1", "1e999", "nan", "-inf", "0"]), label="value")
    lines = base.decode("utf-8").split("\n")
    lines[i] = f"{match.group('indent')}{name}: {huge}"
    kinds = field_kinds(model).get(name, set())
    always_bad = {"99999999999999999999999", "-99999999999999999999999", "1e999", "nan", "-inf"}
    if kinds == {"uint"}:
        always_bad.add("-1")
    if valid and kinds and kinds <= {"int", "uint"} and huge in always_bad:
        return "\n".join(lines).encode("utf-8"), Expect("error", i + 1, name)
    return "\n".join(lines).encode("utf-8"), Expect()


def unknown_field(data: Any, base: bytes, model: str, valid: bool) -> tuple[bytes, Expect]:
    text = base.decode("utf-8").split("\n")
    starts = [i for i, line in enumerate(text) if re.match(r"^\s*[A-Za-z_]\w*\s*[:{<]", line)
              and not re.match(r"^\s*(key|value)\b", line)]
    if not starts:
        return random_text_line(data, base, model, valid)
    i = data.draw(st.sampled_from(starts), label="before line")
    indent = re.match(r"^\s*", text[i]).group(0)
    name = data.draw(st.sampled_from(["bogus_field", "learning_rat", "num_epoch", "zzz_unknown"]), label="name")
    text.insert(i, f"{indent}{name}: 1")
    if valid:
        return "\n".join(text).encode("utf-8"), Expect("error", i + 1, name)
    return "\n".join(text).encode("utf-8"), Expect()


def typographic_quotes(data: Any, base: bytes, model: str, valid: bool) -> tuple[bytes, Expect]:
    text = base.decode("utf-8")
    out, opening = [], True
    for ch in text:
        if ch == '"':
            out.append("\u201c" if opening else "\u201d")
            opening = not opening
        elif ch == "\n":
            opening = True
            out.append(ch)
        else:
            out.append(ch)
    return "".join(out).encode("utf-8"), Expect("same")


def crlf(data: Any, base: bytes, model: str, valid: bool) -> tuple[bytes, Expect]:
    return base.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"), Expect("same")


def tabs(data: Any, base: bytes, model: str, valid: bool) -> tuple[bytes, Expect]:
    lines = [re.sub(rb"^( {2})+", lambda m: b"\t" * (len(m.group(0)) // 2), line) for line in _lines(base)]
    return b"\n".join(lines), Expect("same")


def bom(data: Any, base: bytes, model: str, valid: bool) -> tuple[bytes, Expect]:
    return b"\xef\xbb\xbf" + base, Expect("same")


MUTATIONS: dict[str, Mutation] = {f.__name__: f for f in (
    delete_line, duplicate_line, swap_lines, truncate, random_bytes, random_text_line, non_utf8, nul_byte,
    wrong_type, out_of_range, unknown_field, typographic_quotes, crlf, tabs, bom)}


# ---- running and checking ----------------------------------------------------------------------------

@functools.cache
def base_verdict(path: Path, model: str) -> int:
    from tltk.cli.app import cli  # noqa: F401  (imported once, outside the timed cases)

    return _validate(path, model)[0]


def _validate(path: Path, model: str) -> tuple[int, str]:
    from click.testing import CliRunner

    from tltk.cli.app import cli

    result = CliRunner().invoke(cli, [model, "validate_spec", "-e", str(path)], catch_exceptions=True)
    output = (result.stdout or "") + (result.stderr or "")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"uncaught {type(result.exception).__name__}: {result.exception}") from result.exception
    return result.exit_code, output


def check_case(target: Path, model: str, expect: Expect, base_code: int, rel: Any, what: str) -> None:
    code, output = _validate(target, model)
    if rel.TRACEBACK in output:
        rel.STATS["tracebacks"] += 1
    assert rel.TRACEBACK not in output, f"{what}: traceback\n{output[-3000:]}"
    assert code in (0, 2), f"{what}: exit code {code}\n{output[-3000:]}"
    errors = [line[len("ERROR: "):] for line in output.splitlines() if line.startswith("ERROR: ")]
    source = str(target)
    for error in errors:
        assert error.startswith(source), f"{what}: an error does not name the file: {error!r}"
        rest = error[len(source):]
        located = re.match(r"^:\d+:\d+: ", rest)
        field_named = re.match(r"^: [A-Za-z_][\w.\[\]\"' -]*: ", rest)
        file_level = any(word in rest for word in FILE_LEVEL)
        assert located or field_named or file_level, f"{what}: an error has neither file:line:col nor a field: {error!r}"
    if expect.kind == "error":
        assert code == 2, f"{what}: accepted (exit {code})\n{output[-2000:]}"
    if expect.kind == "same":
        assert code == base_code, f"{what}: exit code {code}, the unmutated file gives {base_code}\n{output[-2000:]}"
    if expect.line:
        at_line = [e for e in errors if e.startswith(f"{source}:{expect.line}:")]
        assert at_line, f"{what}: no error at line {expect.line}\n{output[-2000:]}"
        if expect.needle:
            assert any(expect.needle in e for e in at_line), (
                f"{what}: the error at line {expect.line} does not name {expect.needle!r}\n{output[-2000:]}")
    elif expect.needle:
        assert expect.needle in output, f"{what}: the output does not mention {expect.needle!r}\n{output[-2000:]}"


def _fuzz(data: Any, folder: Path, rel: Any) -> None:
    path, model = data.draw(st.sampled_from(FILES), label="spec file")
    name = data.draw(st.sampled_from(sorted(MUTATIONS)), label="mutation")
    base = path.read_bytes()
    base_code = base_verdict(path, model)
    mutated, expect = MUTATIONS[name](data, base, model, base_code == 0)
    target = folder / path.name
    target.write_bytes(mutated)
    check_case(target, model, expect, base_code, rel, f"{name} on {path.name} ({model})")
    rel.STATS["spec fuzz cases"] += 1
    rel.STATS[f"spec fuzz cases: {name}" + (" (targeted)" if expect.line else "")] += 1


def test_fuzz_inputs_exist():
    assert len(FILES) >= 10, FILES
    names = {p.name for p, _ in FILES}
    assert "quickstart_train.txt" in names


@settings(max_examples=DEFAULT_CASES, **PROFILE)
@hypothesis.given(data=st.data())
def test_spec_fuzz(data, rel, tmp_path):
    _fuzz(data, tmp_path, rel)


@pytest.mark.reliability_long
@settings(max_examples=LONG_CASES, **PROFILE)
@hypothesis.given(data=st.data())
def test_spec_fuzz_long(data, rel, tmp_path):
    _fuzz(data, tmp_path, rel)


def test_every_spec_file_passes_the_layout_mutations(rel, tmp_path):
    """CRLF, tabs, BOM and typographic quotes on every file: the verdict never changes."""
    for path, model in FILES:
        base_code = base_verdict(path, model)
        base = path.read_bytes()
        for mutation in (crlf, tabs, bom, typographic_quotes):
            mutated, expect = mutation(None, base, model, base_code == 0)
            target = tmp_path / path.name
            target.write_bytes(mutated)
            check_case(target, model, expect, base_code, rel, f"{mutation.__name__} on {path.name}")
            rel.STATS["spec fuzz cases"] += 1
