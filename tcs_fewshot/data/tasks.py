"""Deterministic few-shot tasks for the two protocols of DESIGN.md.

Task ``i`` depends only on (dataset fingerprint, split, protocol, N, K, Q, seed, i): its
random generator comes from a :class:`numpy.random.SeedSequence` keyed on exactly those,
never from global state. So any subset of tasks, drawn in any order, by any number of
workers or after a resume, equals the same tasks of an uninterrupted run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Literal

import numpy as np

from tcs_fewshot.data.index import LabelIndex
from tcs_fewshot.errors import TaskShapeError

Protocol = Literal["episodic", "pfsl"]


@dataclass(frozen=True)
class TaskSpec:
    """The shape of a family of tasks.

    Attributes:
        protocol: ``episodic`` (N-way K-shot Q-query tasks over ``split``'s classes) or
            ``pfsl`` (every class, K shots each from the official train images, the whole
            official test set as queries; each task is one repeat of the shot draw).
        split: Split whose classes episodic tasks use; ignored (recorded as ``all``) for pFSL.
        ways: N, classes per task; ``None`` for pFSL (all classes).
        shots: K, labelled support items per class.
        queries: Q, query items per class; ``None`` for pFSL (the whole test set).
        seed: Non-negative base seed.
    """

    protocol: Protocol = "episodic"
    split: str = "test"
    ways: int | None = 5
    shots: int = 5
    queries: int | None = 15
    seed: int = 0

    def __post_init__(self) -> None:
        if self.protocol not in ("episodic", "pfsl"):
            raise TaskShapeError(f"unknown protocol '{self.protocol}'; use 'episodic' or 'pfsl'")
        if self.protocol == "pfsl":
            object.__setattr__(self, "split", "all")
            object.__setattr__(self, "ways", None)
            object.__setattr__(self, "queries", None)
        least = {"ways": 2, "queries": 1, "shots": 1, "seed": 0}
        for name, minimum in least.items():
            value = getattr(self, name)
            if value is None and self.protocol == "pfsl":
                continue
            # Plain ints, so equal specs hash, compare and serialise alike (np.int64 does not).
            if isinstance(value, bool) or value is None or int(value) != value or not minimum <= int(value) < 2**63:
                raise TaskShapeError(f"{name} must be an integer of at least {minimum}, got {value}")
            object.__setattr__(self, name, int(value))
        object.__setattr__(self, "split", str(self.split))

    def as_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        if self.protocol == "pfsl":
            return f"pFSL all-way {self.shots}-shot"
        return f"{self.ways}-way {self.shots}-shot {self.queries}-query ({self.split})"


@dataclass(frozen=True, eq=False)
class Task:
    """One few-shot task: items by id, labels ``0..n_way-1`` indexing ``classes``.

    Attributes:
        index: Task number ``i`` within its spec.
        classes: ``(n_way,)`` class names; label ``j`` means ``classes[j]``.
        support_ids: ``(n_support,)`` item ids.
        support_labels: ``(n_support,)`` int64 labels.
        query_ids: ``(n_query,)`` item ids.
        query_labels: ``(n_query,)`` int64 labels.
    """

    index: int
    classes: tuple[str, ...]
    support_ids: np.ndarray
    support_labels: np.ndarray
    query_ids: np.ndarray
    query_labels: np.ndarray

    @cached_property
    def checksum(self) -> str:
        """sha256 of the content (classes, ids, labels): pairs records of the same task."""
        return content_checksum(
            self.classes, self.support_ids, self.support_labels, self.query_ids, self.query_labels
        )


def content_checksum(classes, support_ids, support_labels, query_ids, query_labels) -> str:
    """sha256 hex digest of a task's content, independent of how it was produced."""
    digest = hashlib.sha256()
    for strings in (classes, support_ids, query_ids):
        digest.update("\x1f".join(str(s) for s in strings).encode())
        digest.update(b"\x1e")
    for labels in (support_labels, query_labels):
        digest.update(np.asarray(labels, dtype="<i8").tobytes())
        digest.update(b"\x1e")
    return digest.hexdigest()


class TaskSampler:
    """Draws task ``i`` of a :class:`TaskSpec` on a :class:`LabelIndex`, on demand.

    The shape is checked once at construction against every class that could be drawn,
    so a run never fails half-way for a class that is too small.
    """

    def __init__(self, index: LabelIndex, spec: TaskSpec) -> None:
        self.index = index
        self.spec = spec
        if spec.protocol == "episodic":
            self.classes = index.classes(spec.split)
            self._members = [index.positions(c) for c in self.classes]
            self._check_episodic()
        else:
            self.classes = index.all_classes()
            self._check_pfsl()
        key = f"{index.fingerprint}|{spec.split}|{spec.protocol}|{spec.ways}|{spec.shots}|{spec.queries}"
        key_words = np.frombuffer(hashlib.sha256(key.encode()).digest(), dtype="<u4")
        self._entropy = [int(spec.seed), *(int(w) for w in key_words)]

    def _check_episodic(self) -> None:
        spec = self.spec
        if spec.ways > len(self.classes):
            raise TaskShapeError(
                f"{spec.ways}-way tasks need {spec.ways} classes but split '{spec.split}' of "
                f"'{self.index.name}' has {len(self.classes)}; lower --ways to at most {len(self.classes)}"
            )
        needed = spec.shots + spec.queries
        for class_name, members in zip(self.classes, self._members):
            if len(members) < needed:
                raise TaskShapeError(
                    f"class '{class_name}' of split '{spec.split}' has {len(members)} items but "
                    f"{spec.shots}-shot {spec.queries}-query tasks need {needed} per class; "
                    f"lower --queries to at most {max(len(members) - spec.shots, 0)} or --shots"
                )
        self._groups = None
        if self.index.groups is not None:
            # Group codes per class member; the check guarantees every draw can be served.
            self._groups = [np.unique(self.index.groups[members], return_inverse=True)[1] for members in self._members]
            for class_name, codes in zip(self.classes, self._groups):
                largest = np.sort(np.bincount(codes))[::-1][: spec.shots].sum()
                if len(codes) - largest < spec.queries:
                    raise TaskShapeError(
                        f"class '{class_name}' of split '{spec.split}' keeps only {len(codes) - largest} items "
                        f"outside the groups of a {spec.shots}-shot support set, fewer than {spec.queries} queries; "
                        f"lower --queries to at most {max(len(codes) - largest, 0)} or --shots"
                    )

    def _check_pfsl(self) -> None:
        if self.index.is_train is None:
            raise TaskShapeError(
                f"the pFSL protocol needs the official train/test image split, which dataset "
                f"'{self.index.name}' does not have; use --protocol episodic"
            )
        self._train_members = []
        for class_name in self.classes:
            members = self.index.positions(class_name)
            train_members = members[self.index.is_train[members]]
            if len(train_members) < self.spec.shots:
                raise TaskShapeError(
                    f"class '{class_name}' has {len(train_members)} official train items but "
                    f"{self.spec.shots}-shot pFSL needs {self.spec.shots}; lower --shots"
                )
            self._train_members.append(train_members)
        test_positions = np.flatnonzero(~self.index.is_train)
        if len(test_positions) == 0:
            raise TaskShapeError(f"dataset '{self.index.name}' has no official test items for pFSL queries")
        if self.index.groups is not None:
            # A query rendering the same instance as a possible shot would be matched to its own copy.
            shared = np.intersect1d(self.index.groups[self.index.is_train], self.index.groups[test_positions])
            if len(shared):
                raise TaskShapeError(
                    f"dataset '{self.index.name}': group '{shared[0]}' has items among both the train and the "
                    f"test images ({len(shared)} such groups); put every group on one side of is_train"
                )
        self._query_positions = test_positions[np.argsort(self.index.item_ids[test_positions], kind="stable")]
        label_of_class = {c: j for j, c in enumerate(self.classes)}
        self._query_labels = np.array(
            [label_of_class[c] for c in self.index.labels[self._query_positions]], dtype=np.int64
        )

    def rng(self, task_index: int) -> np.random.Generator:
        """The generator of task ``task_index``: a pure function of the spec and the index."""
        if task_index < 0:
            raise TaskShapeError(f"task index must be non-negative, got {task_index}")
        return np.random.default_rng(np.random.SeedSequence(self._entropy, spawn_key=(int(task_index),)))

    def task(self, task_index: int) -> Task:
        """Task number ``task_index``."""
        rng = self.rng(task_index)
        if self.spec.protocol == "pfsl":
            return self._pfsl_task(task_index, rng)
        spec = self.spec
        chosen = rng.choice(len(self.classes), size=spec.ways, replace=False)
        draws = np.stack([self._draw(c, rng) for c in chosen])
        labels = np.arange(spec.ways, dtype=np.int64)
        # Shuffled, so that no method can read labels off the order of the items.
        support_order = rng.permutation(spec.ways * spec.shots)
        query_order = rng.permutation(spec.ways * spec.queries)
        ids = self.index.item_ids
        return Task(
            index=int(task_index),
            classes=tuple(self.classes[c] for c in chosen),
            support_ids=ids[draws[:, : spec.shots].ravel()[support_order]],
            support_labels=np.repeat(labels, spec.shots)[support_order],
            query_ids=ids[draws[:, spec.shots :].ravel()[query_order]],
            query_labels=np.repeat(labels, spec.queries)[query_order],
        )

    def _draw(self, class_position: int, rng: np.random.Generator) -> np.ndarray:
        """``(shots + queries,)`` positions of one class: support first, then queries."""
        members, spec = self._members[class_position], self.spec
        if self._groups is None:
            return members[rng.choice(len(members), size=spec.shots + spec.queries, replace=False)]
        codes = self._groups[class_position]
        support = rng.choice(len(members), size=spec.shots, replace=False)
        outside = np.flatnonzero(~np.isin(codes, codes[support]))
        query = outside[rng.choice(len(outside), size=spec.queries, replace=False)]
        return members[np.concatenate([support, query])]

    def _pfsl_task(self, task_index: int, rng: np.random.Generator) -> Task:
        shots = self.spec.shots
        support = np.concatenate(
            [members[rng.choice(len(members), size=shots, replace=False)] for members in self._train_members]
        )
        support_order = rng.permutation(len(support))
        # The query set is the whole test split, shuffled per repeat: sorted ids (CUB's start with
        # the class folder) would hand the labels out in order.
        query_order = rng.permutation(len(self._query_positions))
        ids = self.index.item_ids
        return Task(
            index=int(task_index),
            classes=self.classes,
            support_ids=ids[support[support_order]],
            support_labels=np.repeat(np.arange(len(self.classes), dtype=np.int64), shots)[support_order],
            query_ids=ids[self._query_positions[query_order]],
            query_labels=self._query_labels[query_order],
        )

    def __iter__(self) -> Iterator[Task]:
        task_index = 0
        while True:
            yield self.task(task_index)
            task_index += 1


@dataclass(frozen=True, eq=False)
class TaskSet:
    """A fixed list of tasks with what produced them; the unit that is exported and shared.

    Attributes:
        spec: The task shape and seed.
        dataset_name: Name of the dataset the ids refer to.
        dataset_fingerprint: :attr:`LabelIndex.fingerprint` of that dataset.
        tasks: The tasks, ``tasks[i].index == first_index + i``.
    """

    spec: TaskSpec
    dataset_name: str
    dataset_fingerprint: str
    tasks: tuple[Task, ...]

    @cached_property
    def checksum(self) -> str:
        """sha256 over the spec, the dataset fingerprint and every task checksum."""
        digest = hashlib.sha256(repr(sorted(self.spec.as_dict().items())).encode())
        digest.update(self.dataset_fingerprint.encode())
        for task in self.tasks:
            digest.update(f"{task.index}:{task.checksum}".encode())
        return digest.hexdigest()

    def __len__(self) -> int:
        return len(self.tasks)

    def __iter__(self) -> Iterator[Task]:
        return iter(self.tasks)


def sample_tasks(index: LabelIndex, spec: TaskSpec, n_tasks: int) -> TaskSet:
    """Tasks ``0..n_tasks-1`` of ``spec`` on ``index`` (600 at least for a reported number)."""
    if n_tasks < 1:
        raise TaskShapeError(f"the number of tasks must be at least 1, got {n_tasks}")
    sampler = TaskSampler(index, spec)
    return TaskSet(
        spec=spec,
        dataset_name=index.name,
        dataset_fingerprint=index.fingerprint,
        tasks=tuple(sampler.task(i) for i in range(n_tasks)),
    )
