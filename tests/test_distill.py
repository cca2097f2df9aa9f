"""Distillation on a base split: every objective on one loop, named loss terms, validation, the cache of distilled students."""

import pytest
import torch

from tcs_fewshot.data.benchmarks.emoji import Emoji
from tcs_fewshot.data.benchmarks.emoji_catalog import MIN_EMOJI
from tcs_fewshot.errors import TcsFewshotError
from tcs_fewshot.runs.distilled import distilled_student, settings_for
from tcs_fewshot.methods.distill import DistillSettings, distill
from tcs_fewshot.methods.distill_objectives import OBJECTIVES
from tcs_fewshot.cache.feature_cache import FeatureCache
from tcs_fewshot.models.students import build_student
from tcs_fewshot.models.teachers import load_teacher

SMALL = {"styles": ("openmoji",), "max_subgroups": 5, "max_emoji": 8, "min_instances": MIN_EMOJI, "progress": False}
QUICK = {"views": 1, "epochs": 3, "batch_size": 16, "components": 8, "head_lr": 1e-2, "backbone_lr": 1e-3, "val_tasks": 0}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.set_num_threads(1)
    data = Emoji(**SMALL).load(tmp_path_factory.mktemp("emoji") / "emoji")
    return data, load_teacher("torchvision:mobilenet_v2"), FeatureCache(tmp_path_factory.mktemp("features"))


def scratch(size=32):
    torch.manual_seed(0)
    return build_student("conv4-16", image_size=size)


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_every_objective_trains_on_the_same_loop_with_named_terms(setup, objective):
    data, teacher, cache = setup
    student = scratch()
    before = {k: v.clone() for k, v in student.model.state_dict().items()}
    # From random heads: the loop's own progress (a ridge start begins at the least-squares fit
    # of the initial features, so its first epoch is already low: tested on its own below).
    result = distill(data, teacher, cache, student, DistillSettings(objective=objective, head_init="random", **QUICK))
    expected = {"tcs": {"ce", "mimic"}, "ce": {"ce"}, "kd": {"ce", "kd"}, "fitnets": {"ce", "mimic"}}[objective]
    assert [r["epoch"] for r in result.history] == [1, 2, 3]
    assert expected <= set(result.history[0])
    main_term = "ce" if objective == "ce" else ("kd" if objective == "kd" else "mimic")
    assert result.history[-1][main_term] < result.history[0][main_term]
    n_train = len(data.index.classes("train")) * 8  # 8 emoji per subgroup
    assert result.teacher_forward_passes == (0 if objective == "ce" else n_train)  # plain targets: one pass per image
    assert any(not torch.equal(before[k], v) for k, v in student.model.state_dict().items())
    assert student.config["distilled"]["objective"] == objective


def test_matched_views_cost_a_teacher_pass_per_view_and_online_kd_per_batch(setup):
    data, teacher, cache = setup
    n_train = len(data.index.classes("train")) * 8
    matched = distill(data, teacher, cache, scratch(), DistillSettings(objective="tcs", target_views="matched", **QUICK))
    assert matched.teacher_forward_passes == 2 * n_train
    online = distill(data, teacher, cache, scratch(), DistillSettings(objective="kd", online=True, **{**QUICK, "epochs": 1}))
    assert online.teacher_forward_passes == n_train + 2 * n_train  # the probe's plain images, then every row of an epoch


def test_validation_is_tracked_per_epoch_and_best_val_keeps_its_weights(setup):
    data, teacher, cache = setup
    settings = DistillSettings(objective="ce", **{**QUICK, "val_tasks": 5, "val_queries": 2, "keep": "best-val"})
    student = scratch()
    result = distill(data, teacher, cache, student, settings, evaluated_split="test")
    scores = [r["val_accuracy"] for r in result.history]
    assert result.history[0]["epoch"] == 0 and len(scores) == 4 and all(0 <= s <= 100 for s in scores)
    from tcs_fewshot.methods.distill import _validation

    assert _validation(data, student, settings)(student.model) == pytest.approx(max(scores))


def test_selection_prunes_coordinates_by_cross_entropy_relevance(setup):
    data, teacher, cache = setup
    settings = DistillSettings(objective="tcs", ce_weight=1.0, selection=True, prune_start=1, prune_fraction=0.25,
                               min_components=4, **QUICK)
    result = distill(data, teacher, cache, scratch(), settings)
    assert [r["selected"] for r in result.history] == [6, 5, 4]
    with pytest.raises(TcsFewshotError, match="selection needs"):
        DistillSettings(objective="tcs", selection=True, ce_weight=0.0)


def test_evaluated_classes_never_train_or_choose(setup):
    data, teacher, cache = setup
    with pytest.raises(TcsFewshotError, match="distilling on the 'test' split"):
        distill(data, teacher, cache, scratch(), DistillSettings(split="test"))
    with pytest.raises(TcsFewshotError, match="validating on the 'test' split"):
        distill(data, teacher, cache, scratch(), DistillSettings(val_split="test"))
    with pytest.raises(TcsFewshotError, match="unknown objective"):
        DistillSettings(objective="dkd")
    with pytest.raises(TcsFewshotError, match="online applies to the kd objective"):
        DistillSettings(objective="tcs", online=True)


def test_a_distilled_student_is_made_once_then_served_from_its_cache(setup, tmp_path):
    data, teacher, cache = setup
    settings = settings_for("tcs", QUICK)
    first, record = distilled_student(data, teacher, cache, scratch, settings, root=tmp_path)
    assert not record["cached"] and first.config["distilled"]["objective"] == "tcs"
    again, record_again = distilled_student(data, teacher, cache, scratch, settings, root=tmp_path)
    assert record_again["cached"] and record_again["path"] == record["path"]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(first.model(x), again.model(x))
    other, other_record = distilled_student(data, teacher, cache, scratch, settings_for("tcs", {**QUICK, "seed": 1}), root=tmp_path)
    assert other_record["path"] != record["path"] and not other_record["cached"]


def test_method_names_with_an_objective():
    from tcs_fewshot.methods.registry import method_kind

    assert method_kind("student-ncm@tcs") == method_kind("kd") == "student"
    with pytest.raises(TcsFewshotError, match="unknown distillation objective 'dkd'"):
        method_kind("tcs@dkd")
    with pytest.raises(TcsFewshotError, match="only student methods run on a distilled student"):
        method_kind("ncm@tcs")
    with pytest.raises(TcsFewshotError, match="unknown distill setting 'epoch'"):
        settings_for("tcs", {"epoch": 3})


@pytest.mark.parametrize("objective", ["tcs", "fitnets"])
def test_a_ridge_head_starts_at_least_squares_and_leaves_the_student_as_it_was(setup, objective):
    from tcs_fewshot.methods.distill import DistillNetwork, _standardised_features, build_objective, split_items, view_tensors
    from tcs_fewshot.methods.student_context import split_student

    data, teacher, cache = setup
    settings = DistillSettings(objective=objective, head_init="ridge", **{**QUICK, "views": 0})
    student = scratch()
    item_ids, labels = split_items(data, "train")
    targets = torch.from_numpy(cache.features(teacher, data, item_ids, views=[0]))
    objective_module = build_objective(settings, student.feature_dim, torch.from_numpy(labels), targets, torch.from_numpy(labels))
    network = DistillNetwork(student.model, student.feature_dim, objective_module)
    frozen, _ = split_student(student.model, "all")
    before = {k: v.clone() for k, v in student.model.state_dict().items()}
    mean, std = torch.tensor(student.mean).view(1, 3, 1, 1), torch.tensor(student.std).view(1, 3, 1, 1)
    features = _standardised_features(network, frozen, view_tensors(data, student, item_ids, [0]), mean, std, 16)
    assert all(torch.equal(before[k], v) for k, v in student.model.state_dict().items())  # BN statistics restored
    assert features.shape == (len(item_ids), student.feature_dim)
    head_name = "projector" if objective == "tcs" else "regressor"
    residual_random = (getattr(objective_module, head_name)(features) - objective_module.targets).pow(2).mean()
    objective_module.initialise_head(features)
    head = getattr(objective_module, head_name)
    residual = (head(features) - objective_module.targets).pow(2).mean()
    assert residual < 0.5 * residual_random
    # At the ridge solution the penalised least-squares gradient vanishes: X^T (XW + b - Y) + lambda W = 0.
    gradient = features.T.double() @ (head(features) - objective_module.targets).double() + 1e-2 * len(features) * head.weight.T.double()
    assert gradient.abs().max() < 1e-3 * gradient.new_tensor(1.0).add(features.T.double().abs().sum(1).max())
    trained = distill(data, teacher, cache, scratch(), settings)
    reference = distill(data, teacher, cache, scratch(), DistillSettings(objective=objective, head_init="random", **{**QUICK, "views": 0}))
    assert trained.history[0]["mimic"] < reference.history[0]["mimic"]


def test_ridge_head_init_leaves_classifier_objectives_alone_and_bad_values_are_refused(setup):
    data, teacher, cache = setup
    ridge = scratch()  # each student built just before its run: the heads draw from the seeded global generator
    distill(data, teacher, cache, ridge, DistillSettings(objective="ce", head_init="ridge", **{**QUICK, "epochs": 1}))
    random = scratch()
    distill(data, teacher, cache, random, DistillSettings(objective="ce", head_init="random", **{**QUICK, "epochs": 1}))
    assert all(torch.equal(a, b) for a, b in zip(ridge.model.state_dict().values(), random.model.state_dict().values()))
    with pytest.raises(TcsFewshotError, match="head_init"):
        DistillSettings(head_init="zeros")


def test_the_student_key_ignores_settings_the_objective_does_not_read(setup):
    from tcs_fewshot.runs.distilled import distilled_key

    data, teacher, _ = setup
    initial = scratch()

    def key(objective, **table):
        return distilled_key(data, teacher, initial, settings_for(objective, table))

    # ce always weighs cross-entropy 1 and never looks at the teacher or a coordinate system
    assert key("ce") == key("ce", ce_weight=0.0, components=256, head_init="random", temperature=2.0, target_views="matched")
    assert key("ce") != key("ce", epochs=3)
    assert key("tcs") != key("tcs", components=256)
    assert key("tcs") != key("tcs", head_init="random")
    assert key("tcs") == key("tcs", temperature=2.0, prune_start=5)  # pruning is read only with selection on
    assert key("tcs", selection=True) != key("tcs", selection=True, prune_start=5)
    assert key("fitnets") != key("fitnets", head_init="random")
    assert key("fitnets") == key("fitnets", components=8, scale="whiten")
    assert key("kd") != key("kd", temperature=2.0)
    assert key("kd") == key("kd", head_init="random", components=8)


def test_a_run_with_a_distilled_student_resumes_once_the_cache_serves_it(tmp_path, monkeypatch):
    import json

    import numpy as np
    from PIL import Image

    from cli_invoke import invoke

    from tcs_fewshot.reports.compare import load_runs

    root = tmp_path / "shapes"
    for c in range(9):  # 9 classes x 6 noisy coloured images, split 3/3/3
        (root / "images" / f"class{c}").mkdir(parents=True)
        colour = np.random.default_rng(c).integers(20, 236, size=3)
        for i in range(6):
            noise = np.random.default_rng(100 * c + i).integers(-30, 31, size=(24, 24, 3))
            Image.fromarray((colour + noise).clip(0, 255).astype(np.uint8)).save(root / "images" / f"class{c}" / f"{i}.png")
    (root / "splits.json").write_text(json.dumps({"train": [f"class{c}" for c in range(3)],
                                                  "val": [f"class{c}" for c in range(3, 6)],
                                                  "test": [f"class{c}" for c in range(6, 9)]}))
    (tmp_path / "run.toml").write_text("[distill]\nepochs = 1\nbatch_size = 8\ncomponents = 4\nval_tasks = 0\n")
    monkeypatch.setenv("TCS_FEWSHOT_DATA", str(tmp_path / "data"))
    args = ["run", "--config", str(tmp_path / "run.toml"), "--benchmark", "folder", "--root", str(root / "images"),
            "--split-file", str(root / "splits.json"), "--student", "conv4-8", "--student-init", "scratch",
            "--student-image-size", "24", "--ways", "3", "--shots", "2", "--queries", "2", "--tasks", "2",
            "--methods", "ncm,student-ncm@tcs", "--no-progress", "--out", str(tmp_path / "out")]
    first = invoke(args)
    assert first.exit_code == 0, first.stderr
    def accuracies():
        records = load_runs([tmp_path / "out"])[0].records
        return records.sort_values(["method", "task_index"])[["method", "task_index", "accuracy"]].to_numpy().tolist()

    before = accuracies()
    assert len(before) == 4  # 2 tasks x (ncm, student-ncm@tcs)
    again = invoke(args)  # the distilled student now comes from the cache: the same run, resumed
    assert again.exit_code == 0, again.stderr
    assert accuracies() == before
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert len(manifest["sessions"]) == 2
    (tmp_path / "run.toml").write_text("[distill]\nepochs = 2\nbatch_size = 8\ncomponents = 4\nval_tasks = 0\n")
    changed = invoke(args)  # another distillation is another student: refused in one line
    assert changed.exit_code == 2 and "student-ncm@tcs" in changed.stderr
