"""Task files for other projects: the tasks a run would evaluate, written once (``tcs-fewshot tasks``)."""

from __future__ import annotations

import os
from pathlib import Path

from tcs_fewshot.data.taskfile import save_tasks
from tcs_fewshot.data.tasks import TaskSpec, sample_tasks
from tcs_fewshot.runs.experiment import RunConfig, load_index


def export_tasks(data: RunConfig, spec: TaskSpec, n_tasks: int, out: str | os.PathLike) -> str:
    """Write ``n_tasks`` tasks of ``spec`` on the data ``data`` names (benchmark, root, scheme,
    split file or features file) to ``out`` (``.json`` or ``.json.gz``); returns the file's task checksum.

    ``tcs-fewshot run --tasks-file out`` then evaluates on exactly these tasks.
    """
    return save_tasks(sample_tasks(load_index(data), spec, n_tasks), Path(out))
