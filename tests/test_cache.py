"""The teacher feature cache: right values, computed once, deterministic views, crash-safe storage."""

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from tcs_fewshot.data.benchmarks.base import BenchmarkData
from tcs_fewshot.data.index import LabelIndex
from tcs_fewshot.errors import TcsFewshotError
from tcs_fewshot.cache import store as cache_store
from tcs_fewshot.cache.feature_cache import (
    FeatureCache,
    cache_info,
    clear_cache,
    total_forward_passes,
)
from tcs_fewshot.models.teacher_base import Teacher
from tcs_fewshot.models.views import crop_box, view_image, view_rng

N_ITEMS, DIM = 30, 12


class TinyNet(torch.nn.Module):
    """Two convolutions, pooled, then a linear layer: (B, 3, 32, 32) -> (B, DIM)."""

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU(), torch.nn.Conv2d(8, 16, 3), torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, DIM))

    def forward(self, x):
        return self.body(x)


class Faulty(torch.nn.Module):
    """Wraps a model; from batch ``bad_from`` on returns wrong features, from ``raise_from`` on raises."""

    def __init__(self, inner, raise_from=None, bad_from=None, exit_from=None):
        super().__init__()
        self.inner, self.calls = inner, 0
        self.raise_from, self.bad_from, self.exit_from = raise_from, bad_from, exit_from

    def forward(self, x):
        self.calls += 1
        if self.exit_from is not None and self.calls >= self.exit_from:
            os._exit(9)  # like a kill: no cleanup, no finally blocks, no flushing
        if self.raise_from is not None and self.calls >= self.raise_from:
            raise RuntimeError("simulated crash")
        out = self.inner(x)
        return out * 1000 + 7 if self.bad_from is not None and self.calls >= self.bad_from else out


def make_teacher(identity="tiny-a", seed=0, wrap=None):
    torch.manual_seed(seed)
    model = TinyNet().eval()
    transform = v2.Compose([v2.ToImage(), v2.Resize((32, 32), antialias=True), v2.ToDtype(torch.float32, scale=True),
                            v2.Normalize([0.5, 0.5, 0.5], [0.25, 0.25, 0.25])])
    return Teacher(name=f"test:{identity}", model=(wrap(model) if wrap else model).eval(), transform=transform,
                   feature_dim=DIM, identity=identity, pretraining="none (random weights)", config={"seed": seed})


def make_data(order=None):
    """N_ITEMS random 40x48 RGB images in 3 classes, made in memory; ``order`` permutes the listing."""
    rng = np.random.default_rng(0)
    ids = [f"c{i % 3}/img{i:02d}.png" for i in range(N_ITEMS)]
    images = {item: Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)) for item in ids}
    listing = ids if order is None else [ids[i] for i in order]
    index = LabelIndex.from_items(listing, [item[:2] for item in listing], name="tiny")
    return BenchmarkData(index=index, scheme="all", load_image=lambda item: images[item].copy(), root=Path("."))


def direct(data, item_ids, view=0, identity="tiny-a", seed=0):
    """(len(item_ids), DIM) features from a fresh teacher, one by one: the reference."""
    teacher = make_teacher(identity, seed)
    with torch.inference_mode():
        return np.stack([teacher.model(teacher.transform(view_image(data.load_image(i), i, view))[None])[0].numpy()
                         for i in item_ids])


def count_calls(model):
    calls = []
    model.register_forward_hook(lambda module, args, output: calls.append(len(args[0])))
    return calls


def test_values_equal_a_direct_forward_pass(tmp_path):
    data, cache = make_data(), FeatureCache(tmp_path)
    features = cache.features(make_teacher(), data, batch_size=8)
    assert features.shape == (N_ITEMS, 1, DIM) and features.dtype == np.float32
    np.testing.assert_allclose(features[:, 0], direct(data, data.index.item_ids), rtol=1e-4, atol=1e-5)
    some = list(data.index.item_ids[[7, 3, 29, 3]])  # any order, repeats allowed
    np.testing.assert_array_equal(cache.features(make_teacher(), data, some)[:, 0], features[[7, 3, 29, 3], 0])
    feature_set = cache.feature_set(make_teacher(), data)
    np.testing.assert_array_equal(feature_set.rows(data.index.item_ids), features[:, 0])


def test_a_second_run_does_zero_forward_passes(tmp_path):
    data, teacher = make_data(), make_teacher()
    first = FeatureCache(tmp_path)
    expected = first.features(teacher, data, views=(0, 1))
    assert first.forward_passes == 2 * N_ITEMS
    calls, total = count_calls(teacher.model), total_forward_passes()
    np.testing.assert_array_equal(first.features(teacher, data, views=(0, 1)), expected)
    second = FeatureCache(tmp_path)
    np.testing.assert_array_equal(second.features(teacher, data, views=(0, 1)), expected)
    second.feature_set(teacher, data, view=1)
    assert first.forward_passes == 2 * N_ITEMS and second.forward_passes == 0
    assert calls == [] and total_forward_passes() == total


def test_only_missing_rows_are_computed(tmp_path):
    data, teacher, cache = make_data(), make_teacher(), FeatureCache(tmp_path)
    ids = list(data.index.item_ids)
    cache.features(teacher, data, ids[:10])
    assert cache.forward_passes == 10
    cache.features(teacher, data, ids[:20])
    assert cache.forward_passes == 20
    cache.features(teacher, data, ids[:5], views=(0, 1))
    assert cache.forward_passes == 25
    features = cache.features(teacher, data, views=(0, 1, 2), batch_size=7, progress=True)
    assert cache.forward_passes == 25 + 10 + (N_ITEMS - 5) + N_ITEMS
    for j, view in enumerate((0, 1, 2)):
        np.testing.assert_allclose(features[:, j], direct(data, ids, view), rtol=1e-4, atol=1e-5)


def test_views_are_deterministic_and_differ_from_view_0(tmp_path):
    data = make_data()
    one = FeatureCache(tmp_path / "one").features(make_teacher(), data, views=(0, 1, 2))
    two = FeatureCache(tmp_path / "two").features(make_teacher(), data, views=(2, 1), batch_size=5)
    np.testing.assert_allclose(two, one[:, [2, 1]], rtol=1e-5, atol=1e-6)
    for a, b in ((0, 1), (0, 2), (1, 2)):
        assert np.abs(one[:, a] - one[:, b]).max() > 1e-3
    item = data.index.item_ids[4]
    pixels = [np.asarray(view_image(data.load_image(item), item, 3)) for _ in range(2)]
    np.testing.assert_array_equal(*pixels)
    assert pixels[0].shape == (40, 48, 3) and not np.array_equal(pixels[0], np.asarray(data.load_image(item)))
    # Pinned: numpy's SeedSequence + PCG64 streams are the same on every platform and version.
    assert crop_box(48, 40, view_rng("c1/img04.png", 3)) == (0, 0, 32, 34)
    assert crop_box(48, 40, view_rng("c1/img04.png", 4)) != crop_box(48, 40, view_rng("c1/img04.png", 3))


def test_the_same_data_listed_in_another_order_shares_rows(tmp_path):
    data = make_data()
    expected = FeatureCache(tmp_path).features(make_teacher(), data)
    shuffled = make_data(order=np.random.default_rng(1).permutation(N_ITEMS))
    assert shuffled.index.fingerprint == data.index.fingerprint
    cache = FeatureCache(tmp_path)
    np.testing.assert_array_equal(cache.features(make_teacher(), shuffled, data.index.item_ids), expected)
    assert cache.forward_passes == 0


def test_another_teacher_identity_gets_separate_storage(tmp_path):
    data, cache = make_data(), FeatureCache(tmp_path)
    a = cache.features(make_teacher("tiny-a", seed=0), data)
    b = cache.features(make_teacher("tiny-b", seed=1), data)
    assert cache.forward_passes == 2 * N_ITEMS
    np.testing.assert_allclose(b[:, 0], direct(data, data.index.item_ids, identity="tiny-b", seed=1), rtol=1e-4, atol=1e-5)
    assert np.abs(a - b).max() > 1e-3
    info = cache_info(tmp_path)
    assert sorted(info["teacher"]) == ["test:tiny-a", "test:tiny-b"] and info["path"].nunique() == 2
    meta = json.loads((Path(info["path"][0]) / "meta.json").read_text())
    assert meta["identity"] in ("tiny-a", "tiny-b") and meta["feature_dim"] == DIM and meta["dataset"] == "tiny"
    assert meta["fingerprint"] == data.index.fingerprint and meta["pretraining"].startswith("none")


def test_a_crash_mid_extraction_leaves_a_cache_that_completes_correctly(tmp_path):
    data = make_data()
    with pytest.raises(RuntimeError, match="simulated crash"):
        FeatureCache(tmp_path).features(make_teacher(wrap=lambda m: Faulty(m, raise_from=3)), data, batch_size=8)
    assert cache_info(tmp_path)["items_filled"].tolist() == [16]  # the two finished batches
    cache = FeatureCache(tmp_path)
    features = cache.features(make_teacher(), data, batch_size=8)
    assert cache.forward_passes == N_ITEMS - 16
    np.testing.assert_allclose(features[:, 0], direct(data, data.index.item_ids), rtol=1e-4, atol=1e-5)


def test_rows_written_but_not_marked_are_never_trusted(tmp_path, monkeypatch):
    data, original = make_data(), cache_store.CacheEntry.mark_filled
    marks = []

    def crash_on_second_mark(self, view, rows):
        marks.append(len(rows))
        if len(marks) == 2:
            raise KeyboardInterrupt  # rows of batch 2 (wrong values) are on disk, their bits are not
        original(self, view, rows)

    monkeypatch.setattr(cache_store.CacheEntry, "mark_filled", crash_on_second_mark)
    with pytest.raises(KeyboardInterrupt):
        FeatureCache(tmp_path).features(make_teacher(wrap=lambda m: Faulty(m, bad_from=2)), data, batch_size=8)
    monkeypatch.setattr(cache_store.CacheEntry, "mark_filled", original)
    on_disk = np.load(next(tmp_path.glob("*/*/view-0000.npy")))  # rows follow sorted ids: batch 2 is rows 8..15
    assert (np.abs(on_disk[8:16] - direct(data, sorted(data.index.item_ids)[8:16])).max(axis=1) > 1).all()  # wrong rows
    cache = FeatureCache(tmp_path)
    features = cache.features(make_teacher(), data)
    assert cache.forward_passes == N_ITEMS - 8
    np.testing.assert_allclose(features[:, 0], direct(data, data.index.item_ids), rtol=1e-4, atol=1e-5)


def test_a_killed_process_leaves_a_cache_that_completes_correctly(tmp_path):
    script = ("import test_cache as t; from tcs_fewshot.cache.feature_cache import FeatureCache; "
              f"FeatureCache({str(tmp_path)!r}).features("
              "t.make_teacher(wrap=lambda m: t.Faulty(m, exit_from=3)), t.make_data(), views=(0, 1), batch_size=8)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path])}
    assert subprocess.run([sys.executable, "-c", script], check=False, env=env).returncode == 9
    info = cache_info(tmp_path)
    assert info["rows_filled"].tolist() == [16]
    cache = FeatureCache(tmp_path)
    features = cache.features(make_teacher(), make_data(), views=(0, 1))
    assert cache.forward_passes == 2 * N_ITEMS - 16
    for view in (0, 1):
        np.testing.assert_allclose(features[:, view], direct(make_data(), make_data().index.item_ids, view),
                                   rtol=1e-4, atol=1e-5)


def test_a_read_only_cache_is_read_without_writing(tmp_path, monkeypatch):
    data = make_data()
    expected = FeatureCache(tmp_path).features(make_teacher(), data)
    connect = cache_store.sqlite3.connect

    def no_shm_file(database, *args, uri=False, **kwargs):  # what a read-only directory does to WAL readers
        if not uri:
            raise cache_store.sqlite3.OperationalError("unable to open database file")
        return connect(database, *args, uri=uri, **kwargs)

    monkeypatch.setattr(cache_store.sqlite3, "connect", no_shm_file)
    monkeypatch.setattr(cache_store.os, "access", lambda path, mode: False)
    cache = FeatureCache(tmp_path)
    np.testing.assert_array_equal(cache.features(make_teacher(), data), expected)
    assert cache.forward_passes == 0


def test_concurrent_extractions_compute_each_row_once(tmp_path):
    data, caches = make_data(), [FeatureCache(tmp_path) for _ in range(3)]
    results = [None] * 3
    threads = [threading.Thread(target=lambda k=k: results.__setitem__(k, caches[k].features(make_teacher(), data)))
               for k in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(cache.forward_passes for cache in caches) == N_ITEMS
    for result in results[1:]:
        np.testing.assert_array_equal(result, results[0])


def test_cache_info_and_clear_cache(tmp_path):
    data, cache = make_data(), FeatureCache(tmp_path)
    cache.features(make_teacher("tiny-a"), data, views=(0, 2))
    cache.features(make_teacher("tiny-b", seed=1), data, list(data.index.item_ids[:10]))
    info = cache_info(tmp_path).set_index("teacher")
    assert info.loc["test:tiny-a", ["items", "items_filled", "views", "rows_filled"]].tolist() == [30, 30, 2, 60]
    assert info.loc["test:tiny-b", ["items_filled", "views", "rows_filled"]].tolist() == [10, 1, 10]
    assert (info["size_mb"] > 0).all() and (info["feature_dim"] == DIM).all()
    size_a = int(info.loc["test:tiny-a", "size_mb"] * 2**20)
    assert clear_cache(tmp_path, teacher="test:tiny-a") == size_a
    assert cache_info(tmp_path)["teacher"].tolist() == ["test:tiny-b"]
    cache.features(make_teacher("tiny-a"), data)  # recomputed into a fresh entry
    assert cache.forward_passes == 60 + 10 + 30
    assert clear_cache(tmp_path, teacher="tiny-b") > 0  # by identity too
    assert clear_cache(tmp_path) > 0
    assert cache_info(tmp_path).empty and clear_cache(tmp_path) == 0
    assert clear_cache(tmp_path / "never-made") == 0 and cache_info(tmp_path / "never-made").empty


def test_default_root_and_user_errors(tmp_path):
    assert FeatureCache().root == Path(os.environ["TCS_FEWSHOT_DATA"]) / "features"
    data, cache = make_data(), FeatureCache(tmp_path)
    with pytest.raises(TcsFewshotError, match="not in dataset 'tiny'"):
        cache.features(make_teacher(), data, ["nope.png"])
    with pytest.raises(TcsFewshotError, match="views must be"):
        cache.features(make_teacher(), data, views=(-1,))
    training = make_teacher()
    training.model.train()
    with pytest.raises(TcsFewshotError, match="training mode"):
        cache.features(training, data)
    wrong = make_teacher()
    wrong.feature_dim = DIM + 1
    with pytest.raises(TcsFewshotError, match="expected"):
        FeatureCache(tmp_path / "other").features(wrong, data)
    assert cache_info(tmp_path / "other").empty  # the failed teacher stored nothing, claimed nothing
    np.testing.assert_array_equal(FeatureCache(tmp_path / "other").features(make_teacher(), data),
                                  cache.features(make_teacher(), data))
    with pytest.raises(TcsFewshotError, match="feature_dim"):
        FeatureCache(tmp_path).features(wrong, data)  # same identity, other width: refuse, never mix


def folder_data(root, seed):
    """The ids of make_data as PNG files under ``root``, with pixels drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    ids = [f"c{i % 3}/img{i:02d}.png" for i in range(N_ITEMS)]
    for item in ids:
        (root / item).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(root / item)
    index = LabelIndex.from_items(ids, [item[:2] for item in ids], name="tiny")
    return BenchmarkData(index=index, scheme="all", load_image=lambda item: Image.open(root / item).convert("RGB"),
                         root=root)


def test_same_ids_with_other_pixels_are_not_served_from_the_cache(tmp_path):
    first, second = folder_data(tmp_path / "a", seed=1), folder_data(tmp_path / "b", seed=2)
    assert first.index.fingerprint == second.index.fingerprint  # same ids, labels and splits
    cache = FeatureCache(tmp_path / "cache")
    a = cache.features(make_teacher(), first)[:, 0]
    b = FeatureCache(tmp_path / "cache").features(make_teacher(), second)[:, 0]
    np.testing.assert_allclose(b, direct(second, second.index.item_ids), rtol=1e-4, atol=1e-5)
    assert not np.allclose(a, b)


def test_a_changed_file_recomputes_only_its_row_and_says_why(tmp_path):
    data = folder_data(tmp_path / "a", seed=1)
    before = FeatureCache(tmp_path / "cache").features(make_teacher(), data)[:, 0]
    rewritten, touched = tmp_path / "a" / "c1/img04.png", tmp_path / "a" / "c2/img05.png"
    Image.fromarray(np.full((40, 48, 3), 200, dtype=np.uint8)).save(rewritten)
    stamp = touched.stat().st_mtime_ns + 10**9
    os.utime(touched, ns=(stamp, stamp))
    cache = FeatureCache(tmp_path / "cache")
    after = cache.features(make_teacher(), data)[:, 0]
    assert cache.forward_passes == 2, "only the rewritten and the touched file are recomputed"
    row = list(data.index.item_ids).index("c1/img04.png")
    np.testing.assert_allclose(after[row], direct(data, ["c1/img04.png"])[0], rtol=1e-4, atol=1e-5)
    assert not np.allclose(after[row], before[row])
    unchanged = [i for i, item in enumerate(data.index.item_ids) if item != "c1/img04.png"]
    np.testing.assert_allclose(after[unchanged], before[unchanged], rtol=1e-5, atol=1e-6)
    info = cache_info(tmp_path / "cache").iloc[0]
    assert info["invalidated"] == 2 and "file changed" in info["last_invalidated"]
    again = FeatureCache(tmp_path / "cache")
    again.features(make_teacher(), data)
    assert again.forward_passes == 0


def test_a_rebuilt_embedded_benchmark_is_a_new_entry(tmp_path):
    data = make_data()
    built = BenchmarkData(data.index, data.scheme, data.load_image, data.root, {"build": {"checksum": "one"}})
    rebuilt = BenchmarkData(data.index, data.scheme, data.load_image, data.root, {"build": {"checksum": "two"}})
    FeatureCache(tmp_path).features(make_teacher(), built)
    cache = FeatureCache(tmp_path)
    cache.features(make_teacher(), rebuilt)
    assert cache.forward_passes == N_ITEMS
