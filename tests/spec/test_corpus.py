"""Every real spec in ../shared/corpus is accepted; the two Triton-client configs are rejected."""

from __future__ import annotations

from pathlib import Path

import pytest

from tltk.models import check_spec, load_spec

KINDS = {
    "detectnet_v2_train": ("detectnet_v2", "experiment"),
    "detectnet_v2_infer": ("detectnet_v2", "inference"),
    "detectnet_v2_convert": ("detectnet_v2", "dataset_convert"),
    "mask_rcnn_train": ("mask_rcnn", "experiment"),
}
TRITON_PREFIXES = ("18_", "19_")


def _corpus_root() -> Path | None:
    here = Path(__file__).resolve().parents[2]
    root = here.parent / "shared" / "corpus"
    return root if root.is_dir() else None


def _cases() -> list[tuple[str, str]]:
    root = _corpus_root()
    if root is None:
        return [("missing", "missing")]
    return [(folder, p.name) for folder in KINDS for p in sorted((root / folder).iterdir())
            if not (folder == "detectnet_v2_infer" and p.name.startswith(TRITON_PREFIXES))]


@pytest.mark.parametrize(("folder", "name"), _cases())
def test_corpus_spec_is_accepted(corpus_dir: Path, folder: str, name: str) -> None:
    model, kind = KINDS[folder]
    path = corpus_dir / folder / name
    report = check_spec(path, model=model)
    assert report.valid, "\n".join(report.errors)
    assert report.kind == kind  # recognised without --kind
    loaded = load_spec(path, model=model, kind=kind)
    assert loaded.kind == kind


@pytest.mark.parametrize("prefix", TRITON_PREFIXES)
def test_triton_client_configs_are_rejected_with_explanation(corpus_dir: Path, prefix: str) -> None:
    (path,) = sorted((corpus_dir / "detectnet_v2_infer").glob(prefix + "*"))
    report = check_spec(path, model="detectnet_v2")
    assert not report.valid
    text = "\n".join(report.errors)
    assert "looks like a Triton-client post-processing (clustering) config" in text
    for name in ("linewidth", "classwise_clustering_config", "stride"):
        assert f"unknown field {name!r}" in text
    # every unknown top-level occurrence is reported, each with its own line
    n_blocks = path.read_text().count("classwise_clustering_config")
    assert text.count("unknown field 'classwise_clustering_config'") == n_blocks
    assert "inferencer_config.stride" in text  # where 'stride' belongs


def test_corpus_dialects_are_covered(corpus_dir: Path) -> None:
    """The corpus really exercises the dialects the loader claims to accept."""
    texts = {p.name: p.read_bytes() for folder in KINDS for p in (corpus_dir / folder).iterdir()}
    joined = b"\n".join(texts.values())
    assert b"\r\n" in joined and b"\t" in joined and b"True" in joined
    assert b"img_dir_names: [" in joined and b"'.png'" in joined
