"""The learn2learn and easyfsl adapters, run through the real evaluator (learn2learn is not mocked)."""

from __future__ import annotations

import random
import subprocess
import sys

import learn2learn as l2l
import numpy as np
import pytest
import torch
from learn2learn.data.transforms import KShots, LoadData, NWays, RemapLabels

from tcs_fewshot import NearestClassMean, TcsFewshotError, evaluate
from tcs_fewshot.errors import RunDirectoryError
from tcs_fewshot.interop.easyfsl import easyfsl_episodes
from tcs_fewshot.interop.learn2learn import episode_checksum, learn2learn_episodes

N_CLASSES, PER_CLASS, DIM = 10, 20, 8
WAYS, SHOTS, QUERIES = 5, 3, 5


@pytest.fixture(scope="module")
def features_and_labels() -> tuple[torch.Tensor, torch.Tensor]:
    """10 classes x 20 items of 8-d features around well separated class means."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(N_CLASSES).repeat_interleave(PER_CLASS)
    means = 4.0 * torch.randn(N_CLASSES, DIM, generator=generator)
    return means[labels] + torch.randn(len(labels), DIM, generator=generator), labels


@pytest.fixture(scope="module")
def meta_dataset(features_and_labels) -> l2l.data.MetaDataset:
    return l2l.data.MetaDataset(torch.utils.data.TensorDataset(*features_and_labels))


def task_dataset(dataset: l2l.data.MetaDataset, k: int = SHOTS + QUERIES) -> l2l.data.TaskDataset:
    transforms = [NWays(dataset, WAYS), KShots(dataset, k), LoadData(dataset), RemapLabels(dataset)]
    return l2l.data.TaskDataset(dataset, task_transforms=transforms)


def episodes(dataset, n_tasks: int = 6, seed: int = 0) -> list:
    return list(learn2learn_episodes(task_dataset(dataset), SHOTS, QUERIES, n_tasks, seed=seed))


def test_learn2learn_episodes_through_evaluate(meta_dataset):
    methods = {"ncm": NearestClassMean(), "always_0": lambda sx, sy, qx: np.zeros(len(qx), dtype=np.int64)}
    records = evaluate(learn2learn_episodes(task_dataset(meta_dataset), SHOTS, QUERIES, n_tasks=12), methods)
    assert records.groupby("method").size().to_dict() == {"ncm": 12, "always_0": 12}
    assert records["failure"].isna().all()
    assert records["accuracy"].between(0, 1).all()
    assert (records["n_query"] == WAYS * QUERIES).all()
    assert sorted(records["task_index"].unique()) == list(range(12))
    assert (records.groupby("task_index")["task_checksum"].nunique() == 1).all()
    accuracy = records.groupby("method")["accuracy"].mean()
    assert accuracy["ncm"] > 0.6 and accuracy["always_0"] == pytest.approx(1 / WAYS)


def test_learn2learn_episode_shapes_and_labels(meta_dataset, features_and_labels):
    features, original = features_and_labels
    original_of_row = {row.numpy().tobytes(): int(label) for row, label in zip(features, original)}
    for episode in episodes(meta_dataset):
        assert isinstance(episode.support_inputs, torch.Tensor) and isinstance(episode.query_inputs, torch.Tensor)
        assert episode.support_inputs.shape == (WAYS * SHOTS, DIM)
        assert episode.query_inputs.shape == (WAYS * QUERIES, DIM)
        assert episode.n_way == WAYS
        assert episode.support_labels.dtype == np.int64
        np.testing.assert_array_equal(episode.support_labels, np.repeat(np.arange(WAYS), SHOTS))
        np.testing.assert_array_equal(episode.query_labels, np.repeat(np.arange(WAYS), QUERIES))
        # Each label stands for one original class, the same in support and query; no item twice.
        pairs = {
            (int(label), original_of_row[row.numpy().tobytes()])
            for inputs, labels in ((episode.support_inputs, episode.support_labels), (episode.query_inputs, episode.query_labels))
            for row, label in zip(inputs, labels)
        }
        assert len(pairs) == WAYS and len({original for _, original in pairs}) == WAYS
        rows = torch.cat([episode.support_inputs, episode.query_inputs])
        assert len(torch.unique(rows, dim=0)) == WAYS * (SHOTS + QUERIES)


def test_learn2learn_episodes_are_reproducible(meta_dataset):
    first, again = episodes(meta_dataset), episodes(meta_dataset)
    assert [e.checksum for e in first] == [e.checksum for e in again]
    assert all(torch.equal(a.support_inputs, b.support_inputs) for a, b in zip(first, again))
    assert all(torch.equal(a.query_inputs, b.query_inputs) for a, b in zip(first, again))
    assert len({e.checksum for e in first}) == len(first)  # distinct tasks
    # Episode i does not depend on how many are drawn, nor on the same task dataset object being reused.
    taskset = task_dataset(meta_dataset)
    list(learn2learn_episodes(taskset, SHOTS, QUERIES, 4, seed=3))
    prefix = list(learn2learn_episodes(taskset, SHOTS, QUERIES, 3, seed=0))
    assert [e.checksum for e in prefix] == [e.checksum for e in first[:3]]
    other_seed = episodes(meta_dataset, seed=1)
    assert not {e.checksum for e in other_seed} & {e.checksum for e in first}


def test_learn2learn_episodes_leave_the_callers_random_state_alone(meta_dataset):
    random.seed(123)
    before = random.getstate()
    list(learn2learn_episodes(task_dataset(meta_dataset), SHOTS, QUERIES, 3))
    assert random.getstate() == before
    random.seed(7)
    expected = [random.random() for _ in range(3)]
    random.seed(7)
    interleaved = [random.random() for _ in learn2learn_episodes(task_dataset(meta_dataset), SHOTS, QUERIES, 3)]
    assert interleaved == expected


def test_learn2learn_wrong_shape_is_a_user_error(meta_dataset):
    with pytest.raises(TcsFewshotError, match=r"has 5 samples per class .* need exactly 8; .*KShots\(dataset, k=8\)"):
        next(learn2learn_episodes(task_dataset(meta_dataset, k=5), SHOTS, QUERIES, 2))
    without_kshots = l2l.data.TaskDataset(meta_dataset, [NWays(meta_dataset, WAYS), LoadData(meta_dataset)])
    with pytest.raises(TcsFewshotError, match="has 20 samples per class") as error:
        evaluate(learn2learn_episodes(without_kshots, SHOTS, QUERIES, 2), {"ncm": NearestClassMean()})
    assert "\n" not in str(error.value)
    for bad in ({"shots": 0}, {"queries": 0}, {"n_tasks": 0}, {"seed": -1}):
        arguments = {"shots": SHOTS, "queries": QUERIES, "n_tasks": 2, **bad}
        with pytest.raises(TcsFewshotError, match=f"{next(iter(bad))} must be at least"):
            learn2learn_episodes(task_dataset(meta_dataset), **arguments)


def test_learn2learn_resume_pairs_tasks_by_checksum(meta_dataset, tmp_path):

    def run(seed: int, methods: list[str]):
        tasks = learn2learn_episodes(task_dataset(meta_dataset), SHOTS, QUERIES, 4, seed=seed)
        return evaluate(tasks, {name: NearestClassMean() for name in methods}, run_dir=tmp_path, measure_memory=False)

    first = run(0, ["ncm"])
    resumed = run(0, ["ncm", "ncm_again"])  # the new method runs on the very same episodes
    assert (resumed.groupby("task_index")["task_checksum"].nunique() == 1).all()
    assert resumed.loc[resumed["method"] == "ncm", "task_checksum"].tolist() == first["task_checksum"].tolist()
    with pytest.raises(RunDirectoryError, match="task 0 differs from the one stored"):
        run(1, ["ncm", "ncm_again", "ncm_third"])


def test_episode_checksum_hashes_content_not_container():
    support, query = np.arange(12, dtype=np.float32).reshape(6, 2), np.ones((3, 2), dtype=np.float32)
    labels_s, labels_q = np.repeat(np.arange(3), 2), np.arange(3)
    checksum = episode_checksum(support, labels_s, query, labels_q)
    assert checksum == episode_checksum(torch.from_numpy(support), labels_s, torch.from_numpy(query), labels_q)
    assert checksum != episode_checksum(support.astype(np.float64), labels_s, query, labels_q)
    assert checksum != episode_checksum(support.reshape(2, 6), labels_s, query, labels_q)
    assert checksum != episode_checksum(support, labels_s[::-1].copy(), query, labels_q)
    bfloat = torch.ones(2, 2, dtype=torch.bfloat16)
    assert episode_checksum(bfloat, labels_s, bfloat, labels_q) != episode_checksum(bfloat * 2, labels_s, bfloat, labels_q)


def easyfsl_batches(features_and_labels, n_batches: int = 8) -> list[tuple]:
    """Batches laid out as easyfsl's TaskSampler.episodic_collate_fn gives them."""
    features, original = features_and_labels
    rng = np.random.default_rng(0)
    batches = []
    for _ in range(n_batches):
        classes = rng.choice(N_CLASSES, size=WAYS, replace=False)
        picks = [rng.choice(np.flatnonzero(original.numpy() == c), size=SHOTS + QUERIES, replace=False) for c in classes]
        support = torch.as_tensor(np.concatenate([p[:SHOTS] for p in picks]))
        query = torch.as_tensor(np.concatenate([p[SHOTS:] for p in picks]))
        labels = torch.arange(WAYS)
        batches.append((features[support], labels.repeat_interleave(SHOTS), features[query],
                        labels.repeat_interleave(QUERIES), classes.tolist()))
    return batches


def test_easyfsl_episodes_through_evaluate(features_and_labels):
    batches = easyfsl_batches(features_and_labels)
    batches[1] = tuple(part.numpy() for part in batches[1][:4])  # numpy arrays, no class ids
    records = evaluate(easyfsl_episodes(batches, start_index=10), {"ncm": NearestClassMean()})
    assert records["task_index"].tolist() == list(range(10, 18))
    assert records["failure"].isna().all() and records["accuracy"].between(0, 1).all()
    assert records["accuracy"].mean() > 0.6
    assert (records["n_query"] == WAYS * QUERIES).all()
    torch_again = easyfsl_batches(features_and_labels)[1]
    assert records["task_checksum"][1] == next(easyfsl_episodes([torch_again])).checksum
    assert records["task_checksum"].nunique() == len(batches)


def test_easyfsl_episode_fields(features_and_labels):
    batch = easyfsl_batches(features_and_labels, 1)[0]
    episode = next(easyfsl_episodes([batch]))
    assert episode.task_index == 0 and episode.n_way == WAYS
    assert episode.support_inputs is batch[0] and episode.query_inputs is batch[2]
    assert episode.support_labels.dtype == np.int64 and episode.query_labels.dtype == np.int64
    np.testing.assert_array_equal(episode.query_labels, np.repeat(np.arange(WAYS), QUERIES))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda b: b[:3], "has 3 parts"),
        (lambda b: (b[0], b[1].reshape(-1, 1), *b[2:]), "support labels must be non-empty 1-D integers"),
        (lambda b: (b[0], b[1].float(), *b[2:]), "support labels must be non-empty 1-D integers"),
        (lambda b: (b[0][:-1], *b[1:]), "support has 15 labels but inputs of shape \\(14, 8\\)"),
        (lambda b: (*b[:2], b[2].tolist(), *b[3:]), "query has 25 labels but a list"),
        (lambda b: (b[0], b[1] * 2, *b[2:]), "support labels must be 0..n_way-1"),
        (lambda b: (b[0][:12], b[1][:12], *b[2:]), "query labels \\[4\\] have no support items"),
    ],
)
def test_easyfsl_bad_batches_are_user_errors(features_and_labels, change, message):
    good = easyfsl_batches(features_and_labels, 2)
    with pytest.raises(TcsFewshotError, match=message) as error:
        evaluate(easyfsl_episodes([good[0], change(good[1])]), {"ncm": NearestClassMean()})
    assert "easyfsl batch 1" in str(error.value) and "\n" not in str(error.value)


def test_install_learn2learn_skips_when_installed():
    result = subprocess.run(
        [sys.executable, "-m", "tcs_fewshot.interop.install_learn2learn"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert "learn2learn 0.2.0 is already installed" in result.stdout
