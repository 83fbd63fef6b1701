"""Issue 16, item 1: ``train`` killed (SIGKILL) or interrupted (SIGINT), then run again.

One results folder goes through a chain of interruptions, each at a chosen point of the
training timeline (a step, a checkpoint half written, validation, the final model half
written...), and the same command is run again after each one.  After every interruption:

* every checkpoint with a final name loads completely and holds exactly the weights the
  uninterrupted reference run had at that cycle (nothing is left that loads but is wrong);
* a final model file, if present, loads and equals the reference's;
* the next run resumes from the newest complete checkpoint (it logs that checkpoint's path).

The last run must end with the reference's final weights (within float round-off).  SIGINT
must stop with exit code 130 and the "interrupted" summary, without a traceback.

The default variant interrupts twice per model (SIGINT in a step, SIGKILL while a checkpoint is
written); the ``reliability_long`` variant 12 times.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


@dataclass(frozen=True)
class KillPoint:
    """One interruption: a name, the fault (see faultrun.py; ``{c}``/``{C}`` stand for the cycle
    name, ``{n}`` for the cycle count, ``{s2}`` for the 2nd step of the second cycle the run
    trains) and a checkpoint that must not exist afterwards (which shows the kill landed before
    it was written)."""

    name: str
    fault: str
    not_after: str = ""

    @property
    def signal(self) -> str:
        return self.fault.split("|", 1)[0]


CKPT = r"/checkpoints/\.{c}-{k:04d}[^/]*/"
POINTS: dict[str, KillPoint] = {p.name: p for p in (
    KillPoint("a step of cycle 1", "kill|step||2", not_after="{c}-0001"),
    KillPoint("checkpoint 1 half written (weights, no optimizer)", "kill|write|" + CKPT.replace("{k:04d}", "0001")
              + r"optimizer\.npz$", not_after="{c}-0001"),
    KillPoint("checkpoint 1 written but for state.json", "kill|write|" + CKPT.replace("{k:04d}", "0001")
              + r"state\.json$", not_after="{c}-0001"),
    KillPoint("checkpoint 1 complete, not yet renamed", r"kill|rename|/checkpoints/{c}-0001$", not_after="{c}-0001"),
    KillPoint("SIGINT while the cycle-1 metrics are written", r"sigint|write|/metrics\.jsonl$"),
    KillPoint("a step after resuming", "kill|step||2", not_after="{c}-0002"),
    KillPoint("during validation of cycle 2", r"kill|stderr|{C} 2/{n}: |1|0.15", not_after="{c}-0002"),
    KillPoint("checkpoint 2 half written", "kill|write|" + CKPT.replace("{k:04d}", "0002") + r"optimizer\.npz$",
              not_after="{c}-0002"),
    KillPoint("SIGINT during a step of the next cycle", "sigint|step||{s2}"),
    KillPoint("final model: Keras serialisation", r"kill|write|tltk-save-[^/]*/model\.keras$"),
    KillPoint("final model: container bytes", r"kill|write|/\.model\.tlt\.[0-9a-f]+\.tmp$"),
    KillPoint("final model complete, not yet renamed", r"kill|rename|/model\.tlt$"),
)}

DEFAULT_CHAIN = ("SIGINT during a step of the next cycle", "checkpoint 2 half written")
LONG_CHAIN = tuple(POINTS)


def _checkpoint_names(results: Path, rel: Any) -> list[str]:
    folder = results / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if rel.FINAL_CHECKPOINT.match(p.name))


def check_results(results: Path, reference: Any, rel: Any, diffs: list[tuple[str, float]]) -> None:
    """Every file with a final name in ``results`` is complete and right.

    Weight differences from the reference are appended to ``diffs`` (file, largest difference);
    the caller decides how much is allowed.
    """
    for name in _checkpoint_names(results, rel):
        content = rel.checkpoint_content(results / "checkpoints" / name)  # raises when incomplete
        diffs.append((f"checkpoint {name}", rel.max_abs_diff(content["weights"], reference.checkpoints[name])))
    model_file = results / "model.tlt"
    if model_file.exists():
        diffs.append((str(model_file), rel.max_abs_diff(rel.model_weights(model_file), reference.weights)))
    for log_name in ("status.json", "metrics.jsonl"):
        log_file = results / log_name
        if log_file.exists():
            for line in log_file.read_text(encoding="utf-8").splitlines(keepends=True):
                if line.endswith("\n"):
                    json.loads(line)  # a complete line is a complete record
    for png in results.rglob("*.png"):
        if not png.name.startswith("."):
            from PIL import Image

            with Image.open(png) as image:
                image.load()


def run_chain(chain: tuple[str, ...], prepared: Any, reference: Any, rel: Any, results: Path) -> int:
    """Interrupt training at each point of ``chain`` in turn, then let it finish; returns kills survived."""
    kit = prepared.kit
    steps_per_cycle = int(reference.states[f"{kit.cycle_name}-0001"]["step"])
    values = {"c": kit.cycle_name, "C": kit.cycle_name.capitalize(), "n": kit.num_cycles,
              "s2": steps_per_cycle + 2}
    argv = prepared.train_argv(results)
    survived = 0
    for name in chain:
        point = POINTS[name]
        newest = _checkpoint_names(results, rel)
        fault = point.fault.format(**values)
        result = rel.run(argv, prepared.root, fault=fault)
        where = f"kill point {name!r} ({fault})"
        assert result.mark, f"{where}: the fault point was never reached\n{result.stderr[-3000:]}"
        assert rel.TRACEBACK not in result.stderr, f"{where}: traceback\n{result.stderr[-3000:]}"
        if point.signal == "kill":
            assert result.killed, f"{where}: exit code {result.returncode}\n{result.stderr[-3000:]}"
        else:
            assert result.returncode == 130, f"{where}: SIGINT gave exit code {result.returncode}\n{result.stderr[-3000:]}"
            assert "interrupted" in result.stderr, result.stderr[-2000:]
        if newest:
            assert str(results / "checkpoints" / newest[-1]) in result.stderr, (
                f"{where}: the run did not resume from the newest complete checkpoint {newest[-1]}\n"
                f"{result.stderr[-3000:]}")
        if point.not_after:
            missing = point.not_after.format(**values)
            assert missing not in _checkpoint_names(results, rel), (
                f"{where}: {missing} exists, so the kill landed after it was written")
        diffs: list[tuple[str, float]] = []
        check_results(results, reference, rel, diffs)
        _compare(diffs, where, kit.model, rel)
        survived += 1
        rel.STATS[f"kill points survived ({kit.model})"] += 1
        if point.signal == "sigint":
            rel.STATS[f"SIGINT stops with 130 ({kit.model})"] += 1
    final = rel.run(argv, prepared.root)
    rel.assert_run_ok(final, "the run after the last interruption")
    newest = _checkpoint_names(results, rel)
    assert newest[-1] == f"{kit.cycle_name}-{kit.num_cycles:04d}", newest
    LEFTOVERS[kit.model] = sorted(str(p.relative_to(results)) for p in results.rglob(".*")
                                  if p.name.endswith((".partial", ".tmp")))
    diffs = []
    check_results(results, reference, rel, diffs)
    assert (results / "model.tlt").exists()
    _compare(diffs, "after the final run", kit.model, rel)
    return survived


def _compare(diffs: list[tuple[str, float]], where: str, model: str, rel: Any) -> None:
    """Every weight difference must be float round-off; for a model whose training is known not
    to be reproducible (KNOWN_BUGS "determinism") the differences are recorded and the test ends
    as an expected failure once every structural check has passed."""
    worst = max(diffs, key=lambda d: d[1], default=("", 0.0))
    assert not math.isnan(worst[1]), f"{where}: {worst[0]} holds NaN weights"
    key = f"largest weight difference from the uninterrupted run ({model})"
    rel.FIGURES[key] = max(rel.FIGURES.get(key, 0.0), worst[1])
    if worst[1] <= rel.WEIGHT_TOLERANCE:
        return
    reason = rel.KNOWN_BUGS.get((model, "determinism"))
    if reason is None:
        raise AssertionError(f"{where}: {worst[0]} loads but differs from the uninterrupted run by {worst[1]}")
    NONDETERMINISTIC[model] = f"{reason} (here: {worst[0]} differs by {worst[1]:.3g})"


#: Models whose chain saw weight differences explained by a known non-reproducibility.
NONDETERMINISTIC: dict[str, str] = {}


#: Hidden temporaries each model's default chain left behind after its final, successful run.
LEFTOVERS: dict[str, list[str]] = {}


def test_kill_and_resume_default_chain(model, prepared, reference, rel, tmp_path):
    survived = run_chain(DEFAULT_CHAIN, prepared, reference, rel, tmp_path / "results")
    assert survived == len(DEFAULT_CHAIN)
    if model in NONDETERMINISTIC:
        pytest.xfail(NONDETERMINISTIC[model])


@pytest.mark.reliability_long
def test_kill_and_resume_long_chain(model, prepared, reference, rel, tmp_path):
    survived = run_chain(LONG_CHAIN, prepared, reference, rel, tmp_path / "results")
    assert survived >= 10
    if model in NONDETERMINISTIC:
        pytest.xfail(NONDETERMINISTIC[model])


def test_successful_rerun_leaves_no_temporaries(model):
    """After the default chain's last run nothing hidden is left over (checked on that chain's folder)."""
    if model not in LEFTOVERS:
        pytest.skip("the default chain did not run for this model")
    assert LEFTOVERS[model] == [], f"hidden temporaries left after a successful re-run: {LEFTOVERS[model]}"
