"""``data prepare`` on tiny archives built here in each benchmark's real format.

The archives cannot match the published md5s (torchvision's), nor the manifests' counts, so
each format is shown both ways: refused in one line, and placed with ``--no-verify``; where a
test makes the published values its own (monkeypatched), the verified path is shown too.
"""

import io
import tarfile
import zipfile

import pytest
import torchvision.datasets as tvd
from cli_invoke import invoke
from test_cifar import write_archive
from test_cub import CLASSES as CUB_CLASSES
from test_cub import PER_CLASS as CUB_PER_CLASS
from test_cub import make_cub
from test_mini_imagenet import write_csv_layout, write_pickle_layout
from test_omniglot import CHARACTERS, drawing
from test_tiered_imagenet import write_tree

from tcs_fewshot.data import prepare as prepare_module
from tcs_fewshot.data.archives import md5_of
from tcs_fewshot.data.benchmarks import cub as cub_module
from tcs_fewshot.data.benchmarks import scan as scan_module
from tcs_fewshot.data.benchmarks.cifar import CIFARFS, FC100
from tcs_fewshot.data.benchmarks.cub import CUB
from tcs_fewshot.data.benchmarks.mini_imagenet import MiniImageNet
from tcs_fewshot.data.benchmarks.omniglot import Omniglot
from tcs_fewshot.data.benchmarks.tiered_imagenet import TieredImageNet
from tcs_fewshot.data.manifests import load_manifest
from tcs_fewshot.data.prepare import prepare
from tcs_fewshot.errors import TcsFewshotError


def tar_of(folder, archive, arcname):
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=arcname)
    return archive


def one_error(outcome):
    lines = [line for line in outcome.stderr.splitlines() if line.strip()]
    assert outcome.exit_code == 2 and len(lines) == 1, outcome.stderr
    return lines[0]


def no_staging_left(root):
    return not list(root.glob(".tcs-prepare-*"))


@pytest.fixture
def cifar_tgz(tmp_path):
    write_archive(tmp_path / "src")
    return tar_of(tmp_path / "src" / "cifar-100-python", tmp_path / "cifar-100-python.tar.gz", "cifar-100-python")


def test_cifar_md5_mismatch_is_refused_then_placed_with_no_verify(tmp_path, cifar_tgz):
    root = tmp_path / "data"
    refused = invoke(["data", "prepare", "cifar_fs", "--archive", str(cifar_tgz), "--root", str(root)])
    line = one_error(refused)
    assert f"has md5 {md5_of(cifar_tgz)}, not {tvd.CIFAR100.tgz_md5} (torchvision.datasets.CIFAR100.tgz_md5)" in line
    assert "nothing was placed" in line and "--no-verify" in line and "(and " in line  # counts fail too
    assert not (root / "cifar-100-python").exists() and no_staging_left(root)
    placed = invoke(["data", "prepare", "cifar_fs", "--archive", str(cifar_tgz), "--root", str(root), "--no-verify"])
    assert placed.exit_code == 0, placed.stderr
    assert "warning: cifar-100-python.tar.gz has md5" in placed.stderr
    assert "do not have 600 images" in placed.stderr  # the counts, against the committed manifest
    assert f"run: tcs-fewshot run --benchmark cifar_fs --root {root} --skip-check" in placed.stdout
    assert len(CIFARFS().load(root).index.item_ids) == 100 * 5 and no_staging_left(root)
    assert prepare("fc100", [cifar_tgz], tmp_path / "fc", verify=False).report.facts["classes"] == 100
    assert len(FC100().load(tmp_path / "fc").index.classes("test")) == 20


def test_cifar_verified_when_the_published_md5s_are_its_own(tmp_path, cifar_tgz, monkeypatch):
    """A repacked archive passes on its files' md5s; the archive's own md5 passes outright."""
    source = tmp_path / "src" / "cifar-100-python"
    monkeypatch.setattr(tvd.CIFAR100, "train_list", [["train", md5_of(source / "train")]])
    monkeypatch.setattr(tvd.CIFAR100, "test_list", [["test", md5_of(source / "test")]])
    monkeypatch.setattr(tvd.CIFAR100, "meta", {**tvd.CIFAR100.meta, "md5": md5_of(source / "meta")})

    def tiny(benchmark, scheme):
        manifest = load_manifest(benchmark, scheme)
        manifest["expected"].update(images=500, images_per_class=5)
        return manifest

    monkeypatch.setattr(scan_module, "load_manifest", tiny)
    repacked = prepare("cifar_fs", [cifar_tgz], tmp_path / "a")
    assert repacked.warnings == [] and repacked.report.ok and "a repacked copy" in repacked.checksums[0]
    assert repacked.command == f"tcs-fewshot run --benchmark cifar_fs --root {tmp_path / 'a'}"
    monkeypatch.setattr(tvd.CIFAR100, "tgz_md5", md5_of(cifar_tgz))
    exact = prepare("cifar_fs", [cifar_tgz], tmp_path / "b")
    assert exact.checksums[0].endswith("matches torchvision.datasets.CIFAR100.tgz_md5")


def test_rerun_is_a_no_op_and_another_archive_replaces_cleanly(tmp_path, cifar_tgz, monkeypatch):
    root = tmp_path / "data"
    first = prepare("cifar_fs", [cifar_tgz], root, verify=False)
    assert first.extracted
    (root / "notes.txt").write_text("mine")
    (root / ".tcs-prepare-cifar_fs-killed").mkdir()  # left by a killed run
    stamp = (root / "cifar-100-python" / "train").stat().st_mtime_ns

    def refuse(*args):
        raise AssertionError("the same archives must not be extracted again")

    monkeypatch.setattr(prepare_module, "extract", refuse)
    again = prepare("cifar_fs", [cifar_tgz], root, verify=False)
    assert not again.extracted and again.warnings == first.warnings
    assert (root / "cifar-100-python" / "train").stat().st_mtime_ns == stamp
    outcome = invoke(["data", "prepare", "cifar_fs", "--archive", str(cifar_tgz), "--root", str(root), "--no-verify"])
    assert outcome.exit_code == 0 and "already prepared from these archives (nothing extracted)" in outcome.stdout
    monkeypatch.undo()
    write_archive(tmp_path / "other", skip_label=0)  # one class without images
    other = tar_of(tmp_path / "other" / "cifar-100-python", tmp_path / "other.tar.gz", "cifar-100-python")
    replaced = prepare("cifar_fs", [other], root, verify=False)
    assert replaced.extracted and "class(es) have no images" in " ".join(replaced.warnings)
    assert (root / "notes.txt").read_text() == "mine" and no_staging_left(root)
    assert sorted(p.name for p in root.iterdir()) == [".tcs-prepared-cifar_fs.json", "cifar-100-python", "notes.txt"]


@pytest.fixture(scope="module")
def omniglot_zips(tmp_path_factory):
    """``images_background.zip`` and ``images_evaluation.zip``, one drawing per character."""
    folder = tmp_path_factory.mktemp("omniglot-zips")
    for part in ("images_background", "images_evaluation"):
        with zipfile.ZipFile(folder / f"{part}.zip", "w") as handle:
            handle.writestr(f"{part}/", "")
            for number, where, class_id in CHARACTERS:
                if where == part:
                    buffer = io.BytesIO()
                    drawing(number, 0).save(buffer, "PNG")
                    handle.writestr(f"{part}/{class_id}/{number:04d}_01.png", buffer.getvalue())
    return [folder / "images_background.zip", folder / "images_evaluation.zip"]


def test_omniglot_zips(tmp_path, omniglot_zips):
    with pytest.raises(TcsFewshotError, match="needs images_background.zip and images_evaluation.zip"):
        prepare("omniglot", omniglot_zips[:1], tmp_path / "data")
    with pytest.raises(TcsFewshotError) as refused:
        prepare("omniglot", omniglot_zips, tmp_path / "data")
    published = tvd.Omniglot.zips_md5["images_background"]
    assert f"not {published} (torchvision.datasets.Omniglot.zips_md5['images_background'])" in str(refused.value)
    result = prepare("omniglot", omniglot_zips, tmp_path / "data", verify=False)
    assert [w.split(" has md5")[0] for w in result.warnings[:2]] == ["images_background.zip", "images_evaluation.zip"]
    assert "do not have 20 images" in result.warnings[2] and "expected 32460" in result.warnings[3]
    index = Omniglot().load(tmp_path / "data").index
    assert (len(index.classes("train")), len(index.classes("test")), len(index.item_ids)) == (964, 659, 1623)


def test_mini_imagenet_pickles_and_a_tar_with_split_csvs(tmp_path):
    write_pickle_layout(tmp_path / "pkl")
    (tmp_path / "pkl" / "mini-imagenet-cache-validation.pkl").rename(tmp_path / "pkl" / "mini-imagenet-cache-val.pkl")
    pickles = sorted((tmp_path / "pkl").iterdir())
    result = prepare("mini_imagenet", pickles, tmp_path / "a", verify=False)
    assert result.report.facts["layout"] == "learn2learn_pickle" and "no published checksum" in result.checksums[0]
    assert len(result.warnings) == 2 and "do not have 600 images" in result.warnings[0]  # counts only
    assert len(MiniImageNet().load(tmp_path / "a").index.classes("val")) == 16
    write_csv_layout(tmp_path / "csv")
    images = tar_of(tmp_path / "csv" / "images", tmp_path / "images.tar", "miniImageNet/images")
    csvs = [tmp_path / "csv" / f"{split}.csv" for split in ("train", "val", "test")]
    with pytest.raises(TcsFewshotError, match="no train.csv in the archives; pass Ravi's split CSVs"):
        prepare("mini_imagenet", [images], tmp_path / "b", verify=False)
    prepare("mini_imagenet", [images, *csvs], tmp_path / "b", verify=False)
    data = MiniImageNet().load(tmp_path / "b")
    assert len(data.index.item_ids) == 300 and data.load_image(data.index.item_ids[0]).size == (84, 84)


def test_tiered_tar_is_verified_and_says_there_is_no_published_md5(tmp_path):
    write_tree(tmp_path / "src")
    archive = tar_of(tmp_path / "src", tmp_path / "tiered-imagenet.tar.gz", "tiered_imagenet")
    outcome = invoke(["data", "prepare", "tiered_imagenet", "--archive", str(archive), "--root", str(tmp_path / "d")])
    assert outcome.exit_code == 0, outcome.stderr
    assert "no published checksum (torchvision has no tieredImageNet)" in outcome.stdout and outcome.stderr == ""
    assert outcome.stdout.strip().endswith(f"run: tcs-fewshot run --benchmark tiered_imagenet --root {tmp_path / 'd'}")
    assert len(TieredImageNet().load(tmp_path / "d").index.classes("train")) == 351


@pytest.fixture
def cub_tgz(tmp_path, monkeypatch):
    """CUB_200_2011.tgz with one truncated JPEG; the manifest expects the tiny tree's total."""
    def small(benchmark, scheme):
        manifest = load_manifest(benchmark, scheme)
        manifest["expected"]["images"] = len(CUB_CLASSES) * CUB_PER_CLASS
        return manifest

    monkeypatch.setattr(cub_module, "load_manifest", small)
    base = make_cub(tmp_path / "src")
    broken = sorted((base / "images").rglob("*.jpg"))[7]
    broken.write_bytes(broken.read_bytes()[:60])
    return tar_of(base, tmp_path / "CUB_200_2011.tgz", "CUB_200_2011"), broken.relative_to(tmp_path / "src")


def test_cub_corrupt_jpeg_is_named_under_the_root(tmp_path, cub_tgz):
    archive, broken = cub_tgz
    root = tmp_path / "data"
    with pytest.raises(TcsFewshotError) as refused:
        prepare("cub", [archive], root)
    assert f"corrupt image '{root / broken}'" in str(refused.value) and "\n" not in str(refused.value)
    assert not (root / "CUB_200_2011").exists()
    result = prepare("cub", [archive], root, verify=False)
    assert "torchvision has no CUB-200-2011 class" in result.checksums[0]
    assert result.warnings == result.report.problems and result.command.endswith("--skip-check")
    assert len(CUB().load(root).index.item_ids) == 400


@pytest.mark.parametrize("member", ["../evil.txt", "/tmp/evil.txt", "cifar-100-python/../../evil.txt"])
def test_unsafe_tar_members_are_refused_before_writing(tmp_path, member):
    archive = tmp_path / "cifar-100-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo(member)
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    with pytest.raises(TcsFewshotError, match="unsafe member .*refusing to extract"):
        prepare("cifar_fs", [archive], tmp_path / "a" / "b", verify=False)
    assert not list(tmp_path.rglob("evil.txt")) and no_staging_left(tmp_path / "a" / "b")


def test_links_and_unsafe_zip_names_are_refused(tmp_path):
    archive = tmp_path / "CUB_200_2011.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("CUB_200_2011/images.txt")
        info.type, info.linkname = tarfile.SYMTYPE, "../../../etc/passwd"
        tar.addfile(info)
    with pytest.raises(TcsFewshotError, match="unsafe member 'CUB_200_2011/images.txt' .a link to"):
        prepare("cub", [archive], tmp_path / "data")
    zipped = tmp_path / "images_background.zip"
    with zipfile.ZipFile(zipped, "w") as handle:
        handle.writestr("images_background/../../evil.png", b"x")
    with pytest.raises(TcsFewshotError, match="unsafe member 'images_background/../../evil.png'"):
        prepare("omniglot", [zipped, zipped], tmp_path / "data")


def test_not_an_archive_and_no_archive_benchmarks(tmp_path):
    junk = tmp_path / "CUB_200_2011.tgz"
    junk.write_bytes(bytes(range(100)))
    outcome = invoke(["data", "prepare", "cub", "--archive", str(junk), "--root", str(tmp_path / "d")])
    assert "cannot extract" in one_error(outcome) and "complete copy of the archive" in outcome.stderr
    outcome = invoke(["data", "prepare", "glyphs", "--archive", str(junk)])
    assert "benchmark 'glyphs' has no archive to prepare" in one_error(outcome)
