"""Build every manifest of ``data_manifests/`` from the published split files.

Usage::

    python -m data_manifests.build.splits [SPLITS_DIR] [--out data_manifests]

``SPLITS_DIR`` is the collection of split files described by its ``README.md``; by default the
repository's copy, ``data_manifests/sources`` (whose README gives each file's provenance). Class lists are read from those files, never typed here. The README is
read too: for each source file, its commit, licence and verbatim/derived status, and the
counts it states, which the build checks against what the files give. Any disagreement (or the
Chen et al. sort rule not reproducing its files) stops the build with a one-line error.
Output is deterministic: JSON with sorted keys and indent 1, so a rebuild is byte-identical.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tcs_fewshot.checksums import file_sha256
from tcs_fewshot.data.manifests import FORMAT, VERSION, manifest_checksum
from tcs_fewshot.errors import TcsFewshotError

SPLITS = ("train", "val", "test")
# The published split files, copied into the repository with their README (provenance).
DEFAULT_SPLITS_DIR = Path(__file__).resolve().parents[1] / "sources"
CUB_IMAGES = 11_788  # REFERENCES.md, "CUB-200-2011 on disk"
CIFAR_PER_CLASS = 600  # CIFAR-100: 500 train + 100 test images per fine class
MINI_PER_CLASS = 600  # the Ravi CSVs list 600 images per class
OMNIGLOT_PER_CLASS = 20  # every character was drawn by 20 people

# File in SPLITS_DIR -> (repository, path in it), as the README's tables give them. Commits,
# licences and verbatim/derived come from the README itself.
SOURCES: dict[str, tuple[str, str]] = {
    "cub200/metadataset/cu_birds_splits.json": (
        "google-research/meta-dataset", "meta_dataset/dataset_conversion/splits/cu_birds_splits.json"),
    **{f"cub200/chen_closerlook/{s}.json": ("tristandeleu/pytorch-meta", f"torchmeta/datasets/assets/cub/{s}.json")
       for s in SPLITS},
    **{f"mini_imagenet/ravi_larochelle/{s}.txt": (
        "renmengye/few-shot-ssl-public", f"fewshot/data/mini_imagenet_split/Ravi/{s}.csv") for s in SPLITS},
    "mini_imagenet/ravi_larochelle/wnid_names.tsv": (
        "renmengye/few-shot-ssl-public", "fewshot/data/tiered_imagenet_split/words.txt"),
    **{f"tiered_imagenet/ren2018_superclass/{s}.csv": (
        "renmengye/few-shot-ssl-public", f"fewshot/data/tiered_imagenet_split/{s}.csv") for s in SPLITS},
    "tiered_imagenet/ren2018_superclass/superclass_names.tsv": (
        "renmengye/few-shot-ssl-public", "fewshot/data/tiered_imagenet_split/{train,val,test}.csv and words.txt"),
    **{f"cifar_fs/bertinetto/{s}.json": (
        "tristandeleu/pytorch-meta", f"torchmeta/datasets/assets/cifar100/cifar-fs/{s}.json") for s in SPLITS},
    **{f"fc100/oreshkin/{s}.json": (
        "tristandeleu/pytorch-meta", f"torchmeta/datasets/assets/cifar100/fc100/{s}.json") for s in SPLITS},
    **{f"omniglot/vinyals/{s}.json": ("tristandeleu/pytorch-meta", f"torchmeta/datasets/assets/omniglot/{s}.json")
       for s in SPLITS},
    **{f"omniglot/background_evaluation/{part}.txt": (
        "tristandeleu/pytorch-meta", "torchmeta/datasets/assets/omniglot/{train,val,test}.json")
       for part in ("background", "evaluation")},
}

CUB_CITATION = ("Wah, Branson, Welinder, Perona, Belongie. The Caltech-UCSD Birds-200-2011 Dataset. "
                "Caltech CNS-TR-2011-001, 2011")
CUB_IMAGE_SPLIT = {
    "file": "CUB_200_2011/train_test_split.txt",
    "format": "one '<image_id> <is_training_image>' per line, ids as in images.txt; 1 = train, 0 = test",
}
CUB_CLASS_ID = "class folder name under CUB_200_2011/images/, e.g. '{}'"
IMAGENET_CLASS_ID = "ImageNet wnid (the class folder name), e.g. '{}'"
CIFAR_CLASS_ID = "CIFAR-100 fine label name (fine_label_names of the python archive's meta file), e.g. '{}'"
OMNIGLOT_CLASS_ID = ("'<Alphabet>/<characterNN>', the folders under images_background/ or images_evaluation/ "
                     "(see 'alphabets' for which), e.g. '{}'; rotated copies are not classes here")
CUB_OVERLAP = [{"dataset": "ImageNet-1k", "note": (
    "ImageNet-1k has bird classes, and some CUB images are ImageNet images: learn2learn and Meta-Dataset "
    "exclude 43 known CUB/ImageNet duplicates; this manifest does not exclude them")}]
NOT_ASSESSED = [{"dataset": "ImageNet-1k", "note": (
    "none known: the project's references record no class or image overlap with ImageNet-1k "
    "for this dataset; not assessed, so do not read this as 'no overlap'")}]


class Sources:
    """The split files of ``SPLITS_DIR`` and the facts its README states about them."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        readme = self.directory / "README.md"
        if not readme.is_file():
            raise TcsFewshotError(f"'{readme}' not found; pass the splits directory that holds README.md")
        self.readme = readme.read_text(encoding="utf-8")
        self.repositories: dict[str, tuple[str, str]] = {}  # name or alias -> (commit, licence)
        self.files: dict[str, tuple[str, list[int]]] = {}  # file -> (verbatim|derived, counts stated)
        for line in self.readme.splitlines():
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if len(cells) != 3:
                continue
            if re.fullmatch(r"[0-9a-f]{40}", cells[1]):
                repository, _, alias = cells[0].partition(" (")
                for name in (repository, alias.rstrip(")")):
                    self.repositories[name] = (cells[1], cells[2].split(" (")[0])
            elif cells[0].startswith("`"):
                self._add_files(cells[0], cells[2])

    def _add_files(self, file_cell: str, count_cell: str) -> None:
        pattern = file_cell.split("`")[1]
        kind = "verbatim" if "verbatim" in file_cell else "derived"
        braces = re.search(r"\{([^}]*)\}", pattern)
        names = [pattern.replace(braces.group(0), p) for p in braces.group(1).split(",")] if braces else [pattern]
        # "351 / 97 / 160" gives one count per file of a {a,b,c} row; a single file keeps all numbers.
        parts = count_cell.split("/") if braces else [count_cell]
        if len(parts) != len(names):
            raise TcsFewshotError(f"README row for '{pattern}' gives {len(parts)} counts for {len(names)} files")
        for name, part in zip(names, parts):
            self.files[name] = (kind, [int(n) for n in re.findall(r"\d+", part)])

    def path(self, name: str) -> Path:
        path = self.directory / name
        if not path.is_file():
            raise TcsFewshotError(f"split file '{path}' is missing; pass the complete splits directory")
        return path

    def text(self, name: str) -> str:
        return self.path(name).read_text(encoding="utf-8")

    def json(self, name: str) -> Any:
        return json.loads(self.text(name))

    def lines(self, name: str) -> list[str]:
        return [line.strip() for line in self.text(name).splitlines() if line.strip()]

    def rows(self, name: str, delimiter: str = ",") -> list[list[str]]:
        return [row for row in csv.reader(self.text(name).splitlines(), delimiter=delimiter) if row]

    def provenance(self, *names: str) -> list[dict[str, str]]:
        """One entry per source file: where it came from and the sha256 of the copy used."""
        entries = []
        for name in names:
            repository, source_path = SOURCES[name]
            commit, licence = self.repositories[repository]
            entries.append({
                "file": name, "repository": repository, "commit": commit, "path": source_path,
                "licence": licence, "kind": self.files[name][0],
                "sha256": file_sha256(self.path(name)),
            })
        return entries

    def expect(self, name: str, found: list[int]) -> None:
        """Stop unless the counts the README states for file ``name`` equal ``found``."""
        stated = self.files.get(name, (None, None))[1]
        if stated != found:
            raise TcsFewshotError(f"README.md states counts {stated} for '{name}' but the files give {found}")

    def expect_text(self, regex: str, found: list[int]) -> None:
        """Stop unless the numbers in the README's prose matched by ``regex``'s groups equal ``found``."""
        match = re.search(regex, self.readme, re.MULTILINE)
        stated = [int(n) for group in match.groups() for n in re.findall(r"\d+", group)] if match else None
        if stated != found:
            raise TcsFewshotError(f"README.md states {stated} ({regex!r}) but the files give {found}")


def _disjoint(splits: dict[str, list[str]], what: str) -> None:
    seen: dict[str, str] = {}
    for split, classes in splits.items():
        if len(set(classes)) != len(classes):
            raise TcsFewshotError(f"{what}: split '{split}' lists a class twice")
        for c in classes:
            if c in seen:
                raise TcsFewshotError(f"{what}: class '{c}' is in both '{seen[c]}' and '{split}'")
            seen[c] = split


def _manifest(
    benchmark: str, scheme: str, name: str, splits: dict[str, list[str]], **fields: Any
) -> dict[str, Any]:
    """A complete manifest: common keys, ``expected`` defaults, title with counts, checksum."""
    _disjoint(splits, f"{benchmark}/{scheme}")
    n_classes = sum(len(classes) for classes in splits.values())
    per_class = fields.pop("images_per_class", None)
    images = fields.pop("images", per_class * n_classes if per_class else None)
    counts = "/".join(str(len(classes)) for classes in splits.values())
    manifest = {
        "format": FORMAT, "version": VERSION, "benchmark": benchmark, "scheme": scheme,
        "title": f"{name} ({counts} classes)", "splits": splits, "image_split": None,
        "expected": {"classes": n_classes, "images": images, "images_per_class": per_class},
        **fields,
    }
    manifest["checksum"] = manifest_checksum(manifest)
    return manifest


def build_cub(src: Sources) -> list[dict[str, Any]]:
    metadataset_file = "cub200/metadataset/cu_birds_splits.json"
    raw = src.json(metadataset_file)
    metadataset = {"train": raw["train"], "val": raw["valid"], "test": raw["test"]}
    all_classes = sorted(c for classes in metadataset.values() for c in classes)
    src.expect(metadataset_file, [len(raw["train"]), len(raw["valid"]), len(raw["test"]), len(set(all_classes))])
    chen_files = [f"cub200/chen_closerlook/{s}.json" for s in SPLITS]
    chen = {s: src.json(f) for s, f in zip(SPLITS, chen_files)}
    for s, f in zip(SPLITS, chen_files):
        src.expect(f, [len(chen[s])])
    # Chen et al.'s rule (CloserLookFewShot write_CUB_filelist.py) must give the files, in order.
    rule = {"train": all_classes[0::2], "val": all_classes[1::4], "test": all_classes[3::4]}
    if rule != chen:
        raise TcsFewshotError("the Chen et al. sort rule does not reproduce cub200/chen_closerlook/*.json")
    common = {"class_id": CUB_CLASS_ID.format(all_classes[0]), "images": CUB_IMAGES,
              "pretraining_overlap": CUB_OVERLAP}
    return [
        _manifest("cub", "chen", "CUB-200-2011, Chen et al. 2019 class split", chen, **common,
                  dataset_citation=CUB_CITATION,
                  citation="Chen, Liu, Kira, Wang, Huang. A Closer Look at Few-shot Classification. ICLR 2019",
                  rule="sort the 200 class folder names; index i with i%2==0 is train, i%4==1 val, i%4==3 test "
                       "(CloserLookFewShot filelists/CUB/write_CUB_filelist.py); checked at build time",
                  provenance=src.provenance(*chen_files)),
        _manifest("cub", "metadataset", "CUB-200-2011, Meta-Dataset class split", metadataset, **common,
                  dataset_citation=CUB_CITATION,
                  citation="Triantafillou et al. Meta-Dataset: A Dataset of Datasets for Learning to Learn "
                           "from Few Examples. ICLR 2020",
                  provenance=src.provenance(metadataset_file)),
        _manifest("cub", "official", "CUB-200-2011, all classes with the official train/test image split",
                  {"all": all_classes}, **common, citation=CUB_CITATION, image_split=CUB_IMAGE_SPLIT,
                  protocol="pFSL (IbM2, CVPR 2024; the TCS paper): K shots per class from the train images, "
                           "accuracy on all test images",
                  provenance=src.provenance(metadataset_file)),
    ]


def build_mini_imagenet(src: Sources) -> list[dict[str, Any]]:
    files = [f"mini_imagenet/ravi_larochelle/{s}.txt" for s in SPLITS]
    splits = {s: src.lines(f) for s, f in zip(SPLITS, files)}
    for s, f in zip(SPLITS, files):
        src.expect(f, [len(splits[s])])
    names_file = "mini_imagenet/ravi_larochelle/wnid_names.tsv"
    rows = src.rows(names_file, "\t")[1:]
    src.expect(names_file, [len(rows)])
    if sorted((split, wnid) for split, wnid, _ in rows) != sorted((s, w) for s in SPLITS for w in splits[s]):
        raise TcsFewshotError(f"'{names_file}' does not list exactly the wnids of the split files")
    return [_manifest(
        "mini_imagenet", "ravi", "miniImageNet, Ravi & Larochelle 2017 class split", splits,
        citation="Ravi, Larochelle. Optimization as a Model for Few-Shot Learning. ICLR 2017 (miniImageNet: "
                 "Vinyals et al. Matching Networks for One Shot Learning. NeurIPS 2016)",
        class_id=IMAGENET_CLASS_ID.format(splits["train"][0]), images_per_class=MINI_PER_CLASS,
        class_names={wnid: words for _, wnid, words in rows},
        pretraining_overlap=[{"dataset": "ImageNet-1k", "note": (
            "every class, the test classes included, is an ImageNet-1k class (miniImageNet is a subset of "
            "ImageNet): teachers pretrained on ImageNet-1k have seen the novel classes")}],
        provenance=src.provenance(*files, names_file),
    )]


def build_tiered_imagenet(src: Sources) -> list[dict[str, Any]]:
    files = [f"tiered_imagenet/ren2018_superclass/{s}.csv" for s in SPLITS]
    rows = {s: src.rows(f) for s, f in zip(SPLITS, files)}
    splits = {s: [wnid for wnid, _ in rows[s]] for s in SPLITS}
    superclasses = {wnid: parent for s in SPLITS for wnid, parent in rows[s]}
    parents = {s: sorted({parent for _, parent in rows[s]}) for s in SPLITS}
    for s, f in zip(SPLITS, files):
        src.expect(f, [len(splits[s]), len(parents[s])])
    src.expect_text(r"\((\d+)/(\d+)/(\d+) classes; (\d+)/(\d+)/(\d+) superclasses\)",
                    [len(splits[s]) for s in SPLITS] + [len(parents[s]) for s in SPLITS])
    _disjoint(parents, "tieredImageNet superclasses")
    for s in SPLITS:  # easyfsl's copy: the same lists in the same order
        if src.json(f"tiered_imagenet/ren2018_easyfsl/{s}.json")["class_names"] != splits[s]:
            raise TcsFewshotError(f"easyfsl's tieredImageNet {s}.json disagrees with the renmengye CSV")
    names_file = "tiered_imagenet/ren2018_superclass/superclass_names.tsv"
    name_rows = src.rows(names_file, "\t")[1:]
    src.expect(names_file, [len(name_rows)])
    if sorted((s, p) for s, p, _, _ in name_rows) != sorted((s, p) for s in SPLITS for p in parents[s]):
        raise TcsFewshotError(f"'{names_file}' does not list exactly the superclasses of the CSVs")
    n_all = sum(len(v) for v in splits.values())
    return [_manifest(
        "tiered_imagenet", "ren", "tieredImageNet, Ren et al. 2018 superclass-disjoint split", splits,
        citation="Ren et al. Meta-Learning for Semi-Supervised Few-Shot Classification. ICLR 2018",
        class_id=IMAGENET_CLASS_ID.format(splits["train"][0]),
        superclasses=superclasses, superclass_names={p: words for _, p, _, words in name_rows},
        pretraining_overlap=[{"dataset": "ImageNet-1k", "note": (
            f"all {n_all} classes, the test classes included, are ImageNet-1k classes (tieredImageNet is a subset "
            "of ImageNet): teachers pretrained on ImageNet-1k have seen the novel classes")}],
        provenance=src.provenance(*files, names_file),
    )]


def build_cifar(src: Sources) -> list[dict[str, Any]]:
    fs_files = [f"cifar_fs/bertinetto/{s}.json" for s in SPLITS]
    pairs = {s: src.json(f) for s, f in zip(SPLITS, fs_files)}
    for s, f in zip(SPLITS, fs_files):
        src.expect(f, [len(pairs[s])])
    parent = {fine: coarse for s in SPLITS for coarse, fine in pairs[s]}
    src.expect_text(r"union has (\d+) distinct classes over (\d+) CIFAR-100 superclasses",
                    [len(parent), len(set(parent.values()))])
    fc_files = [f"fc100/oreshkin/{s}.json" for s in SPLITS]
    coarse_splits = {s: src.json(f) for s, f in zip(SPLITS, fc_files)}
    for s, f in zip(SPLITS, fc_files):
        src.expect(f, [len(coarse_splits[s])])
    _disjoint(coarse_splits, "FC100 superclasses")
    fine_of = {coarse: sorted(f for f, c in parent.items() if c == coarse) for coarse in set(parent.values())}
    fc100 = {s: [fine for coarse in coarse_splits[s] for fine in fine_of[coarse]] for s in SPLITS}
    src.expect_text(r"class counts (\d+)/(\d+)/(\d+)", [len(fc100[s]) for s in SPLITS])
    common = {"images_per_class": CIFAR_PER_CLASS, "pretraining_overlap": NOT_ASSESSED, "superclasses": parent}
    return [
        _manifest("cifar_fs", "bertinetto", "CIFAR-FS, Bertinetto et al. 2019 class split",
                  {s: [fine for _, fine in pairs[s]] for s in SPLITS}, **common,
                  citation="Bertinetto, Henriques, Torr, Vedaldi. Meta-learning with differentiable closed-form "
                           "solvers. ICLR 2019 (split as torchmeta ships it; no original split file was found)",
                  class_id=CIFAR_CLASS_ID.format(pairs["train"][0][1]), provenance=src.provenance(*fs_files)),
        _manifest("fc100", "oreshkin", "FC100, Oreshkin et al. 2018 superclass split", fc100, **common,
                  citation="Oreshkin, Rodriguez Lopez, Lacoste. TADAM: Task dependent adaptive metric for "
                           "improved few-shot learning. NeurIPS 2018 (split as torchmeta ships it)",
                  class_id=CIFAR_CLASS_ID.format(fc100["train"][0]), superclass_splits=coarse_splits,
                  provenance=src.provenance(*fc_files, *fs_files)),
    ]


def build_omniglot(src: Sources) -> list[dict[str, Any]]:
    files = [f"omniglot/vinyals/{s}.json" for s in SPLITS]
    raw = {s: src.json(f) for s, f in zip(SPLITS, files)}
    vinyals = {s: [f"{a}/{c}" for part in raw[s].values() for a, chars in part.items() for c in chars]
               for s in SPLITS}
    for s, f in zip(SPLITS, files):
        src.expect(f, [len(vinyals[s])])
        # "- train: 25 background alphabets (792 chars) + 8 evaluation alphabets (236 chars)"
        src.expect_text(rf"^- {s}: (.*)$", [n for part in raw[s].values() if part
                                             for n in (len(part), sum(map(len, part.values())))])
    zips: dict[str, str] = {}  # alphabet -> the Lake zip it is in
    for s in SPLITS:
        for part, alphabets in raw[s].items():
            for alphabet in alphabets:
                if zips.setdefault(alphabet, f"images_{part}") != f"images_{part}":
                    raise TcsFewshotError(f"Omniglot alphabet '{alphabet}' is under both Lake zips")
    characters: dict[str, list[str]] = {alphabet: [] for alphabet in zips}
    for c in sorted(c for s in SPLITS for c in vinyals[s]):
        characters[c.split("/")[0]].append(c.split("/")[1])
    lake = {}
    for split, part in (("train", "background"), ("test", "evaluation")):
        listed = src.lines(f"omniglot/background_evaluation/{part}.txt")
        if sorted(listed) != sorted(a for a, z in zips.items() if z == f"images_{part}"):
            raise TcsFewshotError(f"omniglot/background_evaluation/{part}.txt disagrees with the Vinyals files")
        lake[split] = [f"{a}/{c}" for a in listed for c in characters[a]]
        src.expect(f"omniglot/background_evaluation/{part}.txt", [len(listed), len(lake[split])])
    common = {"images_per_class": OMNIGLOT_PER_CLASS, "pretraining_overlap": NOT_ASSESSED, "alphabets": zips,
              "class_id": OMNIGLOT_CLASS_ID.format(vinyals["train"][0])}
    lake_citation = ("Lake, Salakhutdinov, Tenenbaum. Human-level concept learning through probabilistic program "
                     "induction. Science 2015")
    return [
        _manifest("omniglot", "vinyals", "Omniglot, Vinyals et al. 2016 character split", vinyals, **common,
                  citation="Vinyals et al. Matching Networks for One Shot Learning. NeurIPS 2016; "
                           f"data: {lake_citation}",
                  provenance=src.provenance(*files)),
        _manifest("omniglot", "lake", "Omniglot, Lake et al. background/evaluation alphabets", lake, **common,
                  citation=lake_citation,
                  provenance=src.provenance(*files, *(f"omniglot/background_evaluation/{p}.txt"
                                                      for p in ("background", "evaluation")))),
    ]


BUILDERS: tuple[Callable[[Sources], list[dict[str, Any]]], ...] = (
    build_cub, build_mini_imagenet, build_tiered_imagenet, build_cifar, build_omniglot,
)


def build_all(splits_dir: str | Path) -> list[dict[str, Any]]:
    """Every manifest, built and checked from the files in ``splits_dir``."""
    src = Sources(Path(splits_dir))
    return [manifest for builder in BUILDERS for manifest in builder(src)]


def render(manifest: dict[str, Any]) -> str:
    """The file content of ``manifest``: sorted keys, indent 1, trailing newline."""
    return json.dumps(manifest, sort_keys=True, indent=1, ensure_ascii=False) + "\n"


def write_manifests(manifests: list[dict[str, Any]], out: str | Path) -> list[Path]:
    """Write ``out/<benchmark>/<scheme>.json`` for each manifest; returns the paths written."""
    paths = []
    for manifest in manifests:
        path = Path(out) / manifest["benchmark"] / f"{manifest['scheme']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(render(manifest).encode("utf-8"))
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_manifests.build.splits",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("splits_dir", type=Path, nargs="?", default=DEFAULT_SPLITS_DIR,
                        help="directory of the published split files (with README.md; "
                             "default: data_manifests/sources)")
    parser.add_argument("--out", type=Path, default=Path("data_manifests"),
                        help="where to write (default: data_manifests)")
    args = parser.parse_args(argv)
    try:
        for path in write_manifests(build_all(args.splits_dir), args.out):
            print(path)
    except TcsFewshotError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
