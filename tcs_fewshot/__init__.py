"""tcs-fewshot: few-shot learning with honest episodic evaluation, and TCS distillation.

The public API for embedding the evaluator in another project::

    from tcs_fewshot import LabelIndex, TaskSpec, sample_tasks, evaluate, summary, paired
"""

from tcs_fewshot.data.index import LabelIndex
from tcs_fewshot.data.taskfile import load_tasks, save_tasks
from tcs_fewshot.data.tasks import Task, TaskSampler, TaskSet, TaskSpec, sample_tasks
from tcs_fewshot.errors import TcsFewshotError
from tcs_fewshot.runs.evaluator import Episode, MethodFailure, evaluate
from tcs_fewshot.stats.accuracy import paired, summary
from tcs_fewshot.runs.store import load_records
from tcs_fewshot.methods import (
    FewShotMethod,
    LogisticRegressionProbe,
    NearestClassMean,
    SimpleShot,
)
from tcs_fewshot.data.features import (
    FeatureSet,
    load_features_file,
    save_features_file,
)

__all__ = [
    "Episode",
    "FeatureSet",
    "FewShotMethod",
    "LabelIndex",
    "LogisticRegressionProbe",
    "MethodFailure",
    "NearestClassMean",
    "SimpleShot",
    "Task",
    "TaskSampler",
    "TaskSet",
    "TaskSpec",
    "TcsFewshotError",
    "evaluate",
    "load_features_file",
    "load_records",
    "load_tasks",
    "paired",
    "sample_tasks",
    "save_features_file",
    "save_tasks",
    "summary",
]
