import gzip
import json

import numpy as np
import pytest
from conftest import make_index

from tcs_fewshot import (
    LabelIndex,
    TaskSpec,
    TcsFewshotError,
    load_tasks,
    sample_tasks,
    save_tasks,
)


@pytest.mark.parametrize("name", ["tasks.json", "tasks.json.gz"])
def test_round_trip_keeps_every_task(tmp_path, toy_index, name):
    task_set = sample_tasks(toy_index, TaskSpec(split="val", ways=3, shots=2, queries=4, seed=7), 25)
    checksum = save_tasks(task_set, tmp_path / name)
    loaded = load_tasks(tmp_path / name, index=toy_index)
    assert loaded.checksum == checksum == task_set.checksum
    assert loaded.spec == task_set.spec
    for original, copy in zip(task_set, loaded):
        assert original.classes == copy.classes
        assert np.array_equal(original.query_ids, copy.query_ids)
        assert np.array_equal(original.support_labels, copy.support_labels)


def test_pfsl_round_trip(tmp_path, toy_index):
    task_set = sample_tasks(toy_index, TaskSpec(protocol="pfsl", shots=2), 2)
    save_tasks(task_set, tmp_path / "p.json")
    assert load_tasks(tmp_path / "p.json").checksum == task_set.checksum


def _edit(path, change):
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d["tasks"][3]["query_labels"].reverse(), "task 3 .* does not match its checksum"),
        (lambda d: d["tasks"].pop(), "does not match its overall checksum"),
        (lambda d: d.update(format="other"), "is not a tcs-fewshot task file"),
        (lambda d: d.update(version=99), "has version 99"),
        (lambda d: d["tasks"][0].pop("classes"), "is malformed"),
    ],
)
def test_altered_files_are_named(tmp_path, toy_index, change, message):
    path = tmp_path / "t.json"
    save_tasks(sample_tasks(toy_index, TaskSpec(split="test", ways=2, shots=1, queries=2), 5), path)
    _edit(path, change)
    with pytest.raises(TcsFewshotError, match=message):
        load_tasks(path)


def test_tasks_from_other_data_are_refused(tmp_path, toy_index):
    path = tmp_path / "t.json"
    save_tasks(sample_tasks(toy_index, TaskSpec(split="test", ways=2, shots=1, queries=2), 5), path)
    other = make_index(n_classes=12, per_class=3)
    with pytest.raises(TcsFewshotError, match="which dataset 'toy' does not have"):
        load_tasks(path, index=other)


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(TcsFewshotError, match="does not exist"):
        load_tasks(tmp_path / "nothing.json")
    (tmp_path / "bad.json.gz").write_bytes(b"not gzip")
    with pytest.raises(TcsFewshotError, match="not readable JSON"):
        load_tasks(tmp_path / "bad.json.gz")
    with gzip.open(tmp_path / "list.json.gz", "wt") as handle:
        handle.write("[1, 2]")
    with pytest.raises(TcsFewshotError, match="not a tcs-fewshot task file"):
        load_tasks(tmp_path / "list.json.gz")


def test_tasks_whose_labels_disagree_with_the_data_are_refused(tmp_path, toy_index):
    path = tmp_path / "t.json"
    save_tasks(sample_tasks(toy_index, TaskSpec(split="test", ways=2, shots=1, queries=2), 5), path)
    relabelled = LabelIndex.from_items(toy_index.item_ids, toy_index.labels[::-1], toy_index.class_splits, name="other")
    with pytest.raises(TcsFewshotError, match="but dataset 'other' says"):
        load_tasks(path, index=relabelled)
