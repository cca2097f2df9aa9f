"""Task sampler: the properties DESIGN.md asks of tasks, checked with hypothesis."""

import numpy as np
import pytest
from conftest import make_index
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tcs_fewshot import LabelIndex, TaskSampler, TaskSpec, TcsFewshotError, sample_tasks

INDEX = make_index(n_classes=12, per_class=25)

shapes = st.builds(
    lambda ways, shots, queries, seed, split: TaskSpec(split=split, ways=ways, shots=shots, queries=queries, seed=seed),
    ways=st.integers(2, 4), shots=st.integers(1, 10), queries=st.integers(1, 15),
    seed=st.integers(0, 2**32), split=st.sampled_from(["train", "val", "test"]),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=shapes, task_index=st.integers(0, 10_000))
def test_episodic_task_is_well_formed(spec, task_index):
    task = TaskSampler(INDEX, spec).task(task_index)
    assert len(set(task.support_ids) & set(task.query_ids)) == 0
    assert len(set(task.support_ids)) == spec.ways * spec.shots
    assert np.array_equal(np.bincount(task.support_labels, minlength=spec.ways), [spec.shots] * spec.ways)
    assert np.array_equal(np.bincount(task.query_labels, minlength=spec.ways), [spec.queries] * spec.ways)
    assert set(task.classes) <= set(INDEX.class_splits[spec.split]) and len(set(task.classes)) == spec.ways
    label_of = dict(zip(INDEX.item_ids.tolist(), INDEX.labels.tolist()))
    for ids, labels in ((task.support_ids, task.support_labels), (task.query_ids, task.query_labels)):
        assert [label_of[i] for i in ids] == [task.classes[j] for j in labels]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=shapes, indices=st.lists(st.integers(0, 500), min_size=1, max_size=8))
def test_task_depends_only_on_its_index(spec, indices):
    """Any subset, in any order, from a fresh sampler (another worker, a resume) gives the same tasks."""
    in_order = {i: TaskSampler(INDEX, spec).task(i).checksum for i in sorted(set(indices))}
    shuffled_sampler = TaskSampler(INDEX, spec)
    for i in reversed(indices):
        assert shuffled_sampler.task(i).checksum == in_order[i]


def test_tasks_do_not_depend_on_global_random_state():
    spec = TaskSpec(split="test", ways=3, shots=2, queries=3)
    np.random.seed(1)
    first = sample_tasks(INDEX, spec, 20).checksum
    np.random.seed(2)
    np.random.random(100)
    assert sample_tasks(INDEX, spec, 20).checksum == first


def test_seed_and_shape_change_the_tasks():
    base = TaskSpec(split="test", ways=3, shots=2, queries=3, seed=0)
    reference = sample_tasks(INDEX, base, 5)
    for other in (TaskSpec(split="test", ways=3, shots=2, queries=3, seed=1),
                  TaskSpec(split="test", ways=3, shots=2, queries=4, seed=0)):
        assert [t.checksum for t in sample_tasks(INDEX, other, 5)] != [t.checksum for t in reference]


def test_item_order_does_not_change_tasks_but_content_does():
    spec = TaskSpec(split="test", ways=3, shots=2, queries=3)
    order = np.random.default_rng(0).permutation(len(INDEX.item_ids))
    shuffled = LabelIndex.from_items(INDEX.item_ids[order], INDEX.labels[order], INDEX.class_splits,
                                     is_train=INDEX.is_train[order], name="renamed")
    assert shuffled.fingerprint == INDEX.fingerprint
    assert [t.checksum for t in sample_tasks(shuffled, spec, 10)] == [t.checksum for t in sample_tasks(INDEX, spec, 10)]
    fewer = LabelIndex.from_items(INDEX.item_ids[:-1], INDEX.labels[:-1], INDEX.class_splits, name="toy")
    assert fewer.fingerprint != INDEX.fingerprint


def test_pfsl_tasks_use_all_classes_and_the_whole_test_split():
    spec = TaskSpec(protocol="pfsl", shots=3, seed=4)
    tasks = sample_tasks(INDEX, spec, 3)
    train_ids = set(INDEX.item_ids[INDEX.is_train].tolist())
    test_ids = set(INDEX.item_ids[~INDEX.is_train].tolist())
    for task in tasks:
        assert len(task.classes) == 12
        assert set(task.support_ids) <= train_ids
        assert np.array_equal(np.bincount(task.support_labels), [3] * 12)
        assert set(task.query_ids) == test_ids
    assert len({task.checksum for task in tasks}) == 3, "repeats draw different shots"
    assert tasks.spec.split == "all" and tasks.spec.ways is None


def test_pfsl_query_order_carries_no_label_on_cub_style_ids():
    """CUB ids start with the class folder, so sorted queries would come out grouped by label."""
    names = [f"{c + 1:03d}.Bird_{c}" for c in range(10)]
    ids, labels, is_train = [], [], []
    for c, name in enumerate(names):
        for i in range(20):
            ids.append(f"{name}/{name}_{i:04d}.jpg")
            labels.append(name)
            is_train.append(i < 10)
    index = LabelIndex.from_items(np.array(ids), np.array(labels), {"all": names},
                                  is_train=np.array(is_train), name="cub_style")
    tasks = sample_tasks(index, TaskSpec(protocol="pfsl", shots=1, seed=0), 3)
    test_ids = {item for item, train in zip(ids, is_train) if not train}
    hits = []
    for task in tasks:
        # A position-only cheat: the q-th query gets the class whose block q falls in.
        guess = np.arange(len(task.query_ids)) * len(task.classes) // len(task.query_ids)
        hits.append(np.mean(guess == task.query_labels))
        assert set(task.query_ids.tolist()) == test_ids
    assert max(hits) < 0.3, f"position alone scores {hits} (chance is 0.1)"
    assert len({tuple(task.query_ids) for task in tasks}) == 3, "each repeat shuffles its queries"


@pytest.mark.parametrize(
    "spec, message",
    [
        (dict(split="test", ways=5, shots=5, queries=15), "5-way tasks need 5 classes but split 'test'"),
        (dict(split="test", ways=2, shots=5, queries=21), "class 'class_02' of split 'test' has 25 items"),
        (dict(split="nope", ways=2, shots=1, queries=1), "has no split 'nope'; choose one of: test, train, val"),
    ],
)
def test_bad_shapes_name_the_problem(spec, message):
    with pytest.raises(TcsFewshotError, match=message):
        TaskSampler(INDEX, TaskSpec(**spec))


@pytest.mark.parametrize("field, value", [("shots", 0), ("queries", 0), ("ways", 1), ("seed", -1), ("seed", 2**63),
                                          ("shots", 2.5), ("protocol", "x")])
def test_invalid_spec_values(field, value):
    with pytest.raises(TcsFewshotError, match=field if field != "protocol" else "unknown protocol"):
        TaskSpec(**{field: value})


def test_pfsl_without_train_flags_or_enough_train_items():
    with pytest.raises(TcsFewshotError, match="official train/test image split"):
        TaskSampler(make_index(with_train_flags=False), TaskSpec(protocol="pfsl", shots=1))
    with pytest.raises(TcsFewshotError, match="has 13 official train items but 20-shot pFSL"):
        TaskSampler(INDEX, TaskSpec(protocol="pfsl", shots=20))


def test_index_validation():
    with pytest.raises(TcsFewshotError, match="occurs 2 times"):
        LabelIndex.from_items(["a", "a"], ["x", "y"])
    with pytest.raises(TcsFewshotError, match="names 1 class"):
        LabelIndex.from_items(["a", "b"], ["x", "y"], {"test": ["x", "z"]})


def test_item_order_does_not_reveal_labels():
    """A method that guesses labels from positions scores chance, not 100%."""
    tasks = sample_tasks(INDEX, TaskSpec(split="test", ways=4, shots=3, queries=6), 200)
    by_position = np.mean([
        np.mean(np.arange(len(task.query_labels)) // 6 == task.query_labels) for task in tasks
    ])
    assert 0.15 < by_position < 0.35
    assert np.mean([np.array_equal(t.support_labels, np.sort(t.support_labels)) for t in tasks]) < 0.05


def test_numpy_integers_give_the_same_spec_and_checksum():
    plain = TaskSpec(split="test", ways=3, shots=2, queries=3)
    numpy_ints = TaskSpec(split="test", ways=np.int64(3), shots=np.int32(2), queries=np.int64(3))
    assert plain == numpy_ints and type(numpy_ints.ways) is int
    assert sample_tasks(INDEX, plain, 3).checksum == sample_tasks(INDEX, numpy_ints, 3).checksum


def _grouped_index(copies=3, instances=12, n_classes=6):
    """Each instance rendered ``copies`` times (like one emoji in several styles)."""
    ids, labels, groups = [], [], []
    for c in range(n_classes):
        for k in range(instances):
            for copy in range(copies):
                ids.append(f"style{copy}/c{c}i{k}")
                labels.append(f"class{c}")
                groups.append(f"c{c}i{k}")
    return LabelIndex.from_items(ids, labels, {"test": [f"class{c}" for c in range(n_classes)]}, groups=groups)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shots=st.integers(1, 4), queries=st.integers(1, 10), task_index=st.integers(0, 1000))
def test_a_query_never_shares_a_group_with_the_support(shots, queries, task_index):
    index = _grouped_index()
    group_of = dict(zip(index.item_ids.tolist(), index.groups.tolist()))
    task = TaskSampler(index, TaskSpec(split="test", ways=3, shots=shots, queries=queries)).task(task_index)
    for label in range(3):
        support_groups = {group_of[i] for i in task.support_ids[task.support_labels == label]}
        query_groups = {group_of[i] for i in task.query_ids[task.query_labels == label]}
        assert not support_groups & query_groups
    assert len(set(task.query_ids)) == 3 * queries


def test_groups_change_the_identity_and_an_unservable_shape_is_named():
    index = _grouped_index()
    plain = LabelIndex.from_items(index.item_ids, index.labels, index.class_splits)
    assert plain.fingerprint != index.fingerprint
    with pytest.raises(TcsFewshotError, match="keeps only 21 items outside the groups of a 5-shot support set"):
        TaskSampler(index, TaskSpec(split="test", ways=3, shots=5, queries=22))


def test_pfsl_refuses_a_group_on_both_sides_of_the_image_split():
    base = make_index()
    # Groups of two consecutive items: item 2j is train, 2j+1 test, so every group straddles the split.
    straddling = LabelIndex.from_items(base.item_ids, base.labels, base.class_splits, is_train=base.is_train,
                                       groups=[f"g{i // 2}" for i in range(len(base.item_ids))])
    with pytest.raises(TcsFewshotError, match="has items among both the train and the test images"):
        TaskSampler(straddling, TaskSpec(protocol="pfsl", shots=1))
    one_side = LabelIndex.from_items(base.item_ids, base.labels, base.class_splits, is_train=base.is_train,
                                     groups=[f"g{i}" for i in range(len(base.item_ids))])
    assert TaskSampler(one_side, TaskSpec(protocol="pfsl", shots=1)).task(0).query_ids.size
