"""Leakage: a teacher pretrained on data that contains the benchmark's (novel) classes or images.

The run manifest records, under ``config.data``, the benchmark's ``pretraining_overlap``
notes (from its data manifest: ``[{"dataset": ..., "note": ...}]``) and, when a teacher
embedded the images, ``embedding.pretraining`` (``"ImageNet-1k"``, ``"LVD-142M"``,
``"ImageNet-21k + ImageNet-1k"``, or ``"unknown"``). A note applies when the teacher's
pretraining data is the noted dataset or contains it; notes that record no overlap
("none known: ...", "no class in common ...") never warn.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

# ImageNet releases that hold (nearly) all of ImageNet-1k's classes. By timm's synset lists:
# ImageNet-22k (fall11) and Google's ImageNet-21k hold 999 of the 1,000, timm's ImageNet-12k 993,
# and 99 of miniImageNet's 100 classes. DINOv2's LVD-142M was curated from sources that include
# ImageNet-22k and ImageNet-1k's train split (Oquab et al. 2023, table 15).
IMAGENET_1K_SUPERSETS = ("ImageNet-1k", "ImageNet-12k", "ImageNet-21k", "ImageNet-22k", "LVD-142M")
# Pretraining sets that a "web-scale image data" note covers.
WEB_SCALE = ("LVD-142M", "LAION-2B", "LAION-400M", "OpenAI WIT-400M", "WebLI")
NO_OVERLAP = ("none known", "no class in common")


def pretraining_sets(pretraining: str | None) -> list[str]:
    """The datasets of a teacher's recorded pretraining, e.g. ``"ImageNet-21k + ImageNet-1k"`` -> 2."""
    return [part.strip() for part in re.split(r"[+,;]", pretraining or "") if part.strip()]


def _covers(pretrained_on: str, noted: str) -> bool:
    """Whether pretraining on ``pretrained_on`` means having seen the noted dataset."""
    if pretrained_on.lower() == noted.lower():
        return True
    if noted == "ImageNet-1k":
        return pretrained_on in IMAGENET_1K_SUPERSETS
    if noted.lower().startswith("web-scale"):
        return pretrained_on in WEB_SCALE or pretrained_on.lower() in noted.lower()
    return False


def _overlap_notes(data: Mapping[str, Any]) -> list[dict[str, str]]:
    notes = data.get("pretraining_overlap") or []
    return [note for note in notes if isinstance(note, Mapping) and note.get("dataset") and note.get("note")]


def leakage_warning(manifest: Mapping[str, Any]) -> str | None:
    """A one-paragraph warning when the run's teacher was pretrained on the benchmark's data, else ``None``.

    Args:
        manifest: A run manifest (``manifest.json`` as a dict).

    Returns:
        ``None`` when no teacher embedded the data (pixels, the digits demo, a features file),
        or no overlap note applies to the teacher's pretraining data. When that data is not
        recorded (``"unknown"``, e.g. a checkpoint), notes of an overlap are shown as possible.
    """
    data = (manifest.get("config") or {}).get("data") or {}
    embedding = data.get("embedding")
    if not isinstance(embedding, Mapping):
        return None
    teacher = embedding.get("teacher") or "the teacher"
    benchmark = data.get("benchmark") or "this benchmark"
    pretrained = pretraining_sets(embedding.get("pretraining"))
    notes = [note for note in _overlap_notes(data) if not note["note"].lower().startswith(NO_OVERLAP)]
    known = [s for s in pretrained if s.lower() != "unknown"]
    if not known:
        if not notes:
            return None
        noted = "; ".join(f"{note['dataset']}: {note['note']}" for note in notes)
        return (
            f"Possible leakage: the pretraining data of teacher {teacher} is not recorded, and {benchmark} "
            f"overlaps common pretraining data ({noted}). If the teacher saw that data, its accuracy here "
            "partly measures recall of pretraining rather than few-shot learning of novel classes."
        )
    applying = [(s, note) for note in notes for s in known if _covers(s, note["dataset"])]
    if not applying:
        return None
    described = "; ".join(
        (f"{note['dataset']}: {note['note']}" if s.lower() == note["dataset"].lower()
         else f"{note['dataset']} (covered by its pretraining on {s}): {note['note']}")
        for s, note in applying
    )
    return (
        f"Leakage warning: teacher {teacher} was pretrained on {' + '.join(known)}, which overlaps {benchmark} "
        f"({described}). Its accuracy here partly measures recall of classes or images seen in pretraining, "
        "not only few-shot learning of novel classes: compare methods with each other on the same teacher, "
        "and for claims about novel classes prefer a benchmark or a teacher without this overlap."
    )


def distinct_warnings(manifests: Iterable[tuple[str, Mapping[str, Any]]]) -> list[tuple[str, list[str]]]:
    """``(warning, labels of the runs it concerns)`` per distinct warning of ``(label, manifest)`` pairs."""
    found: dict[str, list[str]] = {}
    for label, manifest in manifests:
        text = leakage_warning(manifest)
        if text:
            found.setdefault(text, []).append(label)
    return list(found.items())
