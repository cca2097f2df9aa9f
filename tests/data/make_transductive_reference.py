"""Run on the code before fit(..., unlabelled=) (transductive TCS trained inside predict, at a63a758).

Saves the logits, summed step losses and teacher passes of transductive TCS on a fixed small
config, the reference that ``fit(support, labels, unlabelled=queries)`` must reproduce.
"""
import sys
import torch
from pathlib import Path
from tcs_fewshot.data.benchmarks.emoji import Emoji
from tcs_fewshot.data.benchmarks.emoji_catalog import MIN_EMOJI
from tcs_fewshot.data.tasks import TaskSpec, sample_tasks
from tcs_fewshot.methods.student_context import StudentContext
from tcs_fewshot.methods.student_training import TrainingSettings
from tcs_fewshot.methods.tcs import TCS
from tcs_fewshot.cache.feature_cache import FeatureCache
from tcs_fewshot.models.students import build_student
from tcs_fewshot.models.teachers import load_teacher

SMALL = {"styles": ("openmoji",), "max_subgroups": 5, "max_emoji": 8, "min_instances": MIN_EMOJI, "progress": False}
out = Path(sys.argv[1])
torch.set_num_threads(1)
data = Emoji(**SMALL).load(out.parent / "emoji")
teacher = load_teacher("torchvision:mobilenet_v2")
cache = FeatureCache(out.parent / "features")
task = sample_tasks(data.index, TaskSpec(split="test", ways=3, shots=2, queries=3, seed=0), 1).tasks[0]
torch.manual_seed(0)
context = StudentContext(data, teacher, cache, build_student("conv4-16", image_size=32), views=1)
result = {}
for layers in ("head", "last"):
    settings = TrainingSettings(steps=8, learning_rate=0.01, batch_size=5, train_layers=layers)
    for mimic in ("mse", "elsh"):
        method = TCS(context, settings, components=4, mimic_loss=mimic, transductive=True).fit(task.support_ids, task.support_labels)
        result[f"{mimic}/{layers}"] = method.predict(task.query_ids).detach().clone()
        result[f"{mimic}/{layers}/losses"] = torch.tensor(method.loss_history, dtype=torch.float64)
        result[f"{mimic}/{layers}/passes"] = method.teacher_forward_passes
result["support_ids"] = list(map(str, task.support_ids))
torch.save(result, out)
print({k: v.shape if hasattr(v, "shape") else v for k, v in result.items()})
