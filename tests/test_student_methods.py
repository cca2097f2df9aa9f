"""Every student method end to end on a small emoji build with the real offline MobileNetV2 teacher."""

from pathlib import Path

import numpy as np
import pytest
import torch

from tcs_fewshot.data.benchmarks.emoji import Emoji
from tcs_fewshot.data.benchmarks.emoji_catalog import MIN_EMOJI
from tcs_fewshot.data.tasks import TaskSpec, sample_tasks
from tcs_fewshot.errors import TcsFewshotError
from tcs_fewshot.runs.evaluator import evaluate
from tcs_fewshot.runs.method_setup import StudentOptions, build_methods
from tcs_fewshot.methods.registry import IMAGES, method_names
from tcs_fewshot.methods.distill import DistillSettings, distill
from tcs_fewshot.methods.student_context import StudentContext
from tcs_fewshot.methods.tcs import TCS
from tcs_fewshot.cache.feature_cache import FeatureCache
from tcs_fewshot.models.students import build_student, save_student
from tcs_fewshot.models.teachers import load_teacher

SMALL = {"styles": ("openmoji",), "max_subgroups": 5, "max_emoji": 8, "min_instances": MIN_EMOJI, "progress": False}
SPEC = TaskSpec(split="test", ways=3, shots=2, queries=3, seed=0)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.set_num_threads(1)
    data = Emoji(**SMALL).load(tmp_path_factory.mktemp("emoji") / "emoji")
    teacher = load_teacher("torchvision:mobilenet_v2")
    cache = FeatureCache(tmp_path_factory.mktemp("features"))
    return data, teacher, cache


def test_every_student_method_gives_valid_records_and_counts_teacher_passes(setup):
    data, teacher, cache = setup
    tasks = sample_tasks(data.index, SPEC, 2)
    names = ["ncm", "pixel-ncm", *method_names(IMAGES)]
    train_ids = data.index.item_ids[:12]
    unrelated = lambda: cache.features(teacher, data, train_ids, views=[0])[:, 0]
    options = StudentOptions("conv4-16", views=1, training={"steps": 15}, options={"tcs": {"components": 4}})
    methods, inputs, settings = build_methods(names, cache.feature_set(teacher, data), None, data=data, teacher=teacher,
                                              cache=cache, student=options, unrelated=unrelated)
    records = evaluate(tasks, methods, inputs, measure_memory=False)
    assert records["failure"].isna().all(), records["failure"].dropna().tolist()
    assert len(records) == 2 * len(names) and records["accuracy"].between(0, 1).all()
    passes = records.set_index(["task_index", "method"])["teacher_forward_passes"]
    support_views = SPEC.ways * SPEC.shots * 2  # every support image and its one augmented view
    for name in ("kd", "fitnets", "lsh-l2", "tcs", "tcs-random", "tcs-unrelated", "tcs-noselect", "tcs-elsh"):
        assert (passes.xs(name, level="method") == support_views).all(), name
    assert (passes.xs("kd-online", level="method") == 15 * support_views).all(), "the teacher runs on every step's batch"
    assert (passes.xs("finetune", level="method") == 0).all() and passes.xs("ncm", level="method").isna().all()
    assert settings["tcs"]["components"] == 4 and settings["tcs-unrelated"]["pca_data"] == "unrelated"
    assert settings["student"]["student"]["spec"] == "conv4-16"


def test_tcs_loss_falls_and_selection_prunes(setup):
    data, teacher, cache = setup
    torch.manual_seed(0)
    context = StudentContext(data, teacher, cache, build_student("conv4-16", image_size=48), views=2)
    task = sample_tasks(data.index, SPEC, 1).tasks[0]
    from tcs_fewshot.methods.student_training import TrainingSettings

    tcs = TCS(TrainingSettings(steps=60, train_layers="last", batch_size=9), components=8, prune_start=10,
              prune_every=10, prune_fraction=0.2, min_components=3)
    tcs.fit(context.items(task.support_ids), task.support_labels)
    early, late = np.mean(tcs.losses_[:5]), np.mean(tcs.losses_[-5:])
    assert late < 0.8 * early, (early, late)
    assert 3 <= tcs.selected_components < tcs.system_.components
    logits = tcs.predict(context.items(task.query_ids))
    assert logits.shape == (len(task.query_ids), SPEC.ways) and torch.isfinite(logits).all()
    # Same task, same numbers: per-task seeds come from the support items, not from global state.
    torch.manual_seed(123)
    again = TCS(TrainingSettings(steps=60, train_layers="last", batch_size=9), components=8, prune_start=10,
                prune_every=10, prune_fraction=0.2, min_components=3).fit(context.items(task.support_ids), task.support_labels)
    assert torch.allclose(again.predict(context.items(task.query_ids)), logits, atol=1e-5)


def test_distill_on_the_base_split_then_evaluate_from_the_checkpoint(setup, tmp_path):
    data, teacher, cache = setup
    torch.manual_seed(0)
    student = build_student("conv4-16", image_size=32)
    settings = DistillSettings(views=1, epochs=3, batch_size=16, components=8, head_lr=1e-2, backbone_lr=1e-3, val_tasks=0)
    result = distill(data, teacher, cache, student, settings)
    losses = [epoch["mimic"] + epoch["ce"] for epoch in result.history]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert result.teacher_forward_passes == len(data.index.classes("train")) * 8  # 8 emoji per subgroup, plain targets
    save_student(student, tmp_path / "student.pt")
    loaded = build_student("conv4-16", "checkpoint", tmp_path / "student.pt")
    assert loaded.image_size == 32 and loaded.config["distilled"]["objective"] == "tcs"
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded.model(x), student.model(x), atol=1e-6)
    with pytest.raises(TcsFewshotError, match="no split 'base'"):
        distill(data, teacher, cache, student, DistillSettings(split="base", val_tasks=0))

def test_cpu_numbers_equal_the_code_before_devices_and_separate_rates(setup, tmp_path):
    """tests/data/student_reference_logits.pt was written by tests/data/make_student_reference.py at 5b4a35a."""
    from tcs_fewshot.methods.finetune import FineTune, StudentNCM
    from tcs_fewshot.methods.kd import LogitKD
    from tcs_fewshot.methods.student_training import TrainingSettings

    data, teacher, cache = setup
    reference = torch.load(Path(__file__).parent / "data" / "student_reference_logits.pt", weights_only=True)
    task = sample_tasks(data.index, SPEC, 1).tasks[0]
    assert list(map(str, task.support_ids)) == reference["support_ids"]
    torch.manual_seed(0)
    context = StudentContext(data, teacher, cache, build_student("conv4-16", image_size=32), views=1, device="cpu")
    differences = {}
    for layers in ("head", "last", "all"):
        settings = TrainingSettings(steps=8, learning_rate=0.01, batch_size=5, train_layers=layers)
        for name, cls, options in (("student-ncm", StudentNCM, {}), ("finetune", FineTune, {}), ("kd", LogitKD, {}),
                                   ("tcs", TCS, {"components": 4})):
            logits = cls(settings, **options).fit(context.items(task.support_ids), task.support_labels).predict(context.items(task.query_ids))
            differences[f"{name}/{layers}"] = float((logits - reference[f"{name}/{layers}"]).abs().max())
    # The reference was made on an Intel CPU; float32 kernels differ by CPU vendor: an AMD EPYC
    # gave up to 4e-6 with the student frozen (head) and 2.5e-4 after 8 Adam steps through the
    # backbone (last, all), which amplify rounding. On logits of about 10 these bounds are
    # relative 1e-5 and 2e-4, far below what any change of the computation (a rate, a batch-norm
    # mode, a seed) moves: those change logits by 1e-2 or more.
    frozen = {key: value for key, value in differences.items() if key.endswith("/head")}
    trained = {key: value for key, value in differences.items() if not key.endswith("/head")}
    assert max(frozen.values()) < 1e-4, frozen
    assert max(trained.values()) < 2e-3, trained


class RaisingCache:
    def features(self, *args, **kwargs):
        raise AssertionError("this method must not read teacher features")


def test_student_ncm_and_finetune_never_read_the_teacher_and_warm_up_fills_the_memo(setup, monkeypatch):
    from tcs_fewshot.methods.finetune import FineTune, StudentNCM
    from tcs_fewshot.methods.student_training import TrainingSettings

    data, teacher, _ = setup
    task = sample_tasks(data.index, SPEC, 1).tasks[0]
    torch.manual_seed(0)
    context = StudentContext(data, teacher, RaisingCache(), build_student("conv4-16", image_size=32), views=2)
    methods = [StudentNCM(TrainingSettings(train_layers="last-2")),
               FineTune(TrainingSettings(steps=3, train_layers="last-2"))]
    for method in methods:
        method.warm_up(context.items(np.concatenate([task.support_ids, task.query_ids])))
    monkeypatch.setattr(context, "images", lambda *args: (_ for _ in ()).throw(AssertionError("image loaded after warm_up")))
    for method in methods:
        logits = method.fit(context.items(task.support_ids), task.support_labels).predict(context.items(task.query_ids))
        assert logits.shape == (len(task.query_ids), SPEC.ways) and method.teacher_forward_passes == 0


def test_backbone_and_head_rates_and_amp_refused_on_cpu(setup):
    from tcs_fewshot.methods.finetune import FineTune
    from tcs_fewshot.methods.student_training import TrainingSettings

    data, teacher, cache = setup
    task = sample_tasks(data.index, SPEC, 1).tasks[0]
    torch.manual_seed(0)
    context = StudentContext(data, teacher, cache, build_student("conv4-16", image_size=32), views=1)
    frozen_backbone = FineTune(TrainingSettings(steps=5, train_layers="last-2", backbone_lr=1e-12))
    frozen_backbone.fit(context.items(task.support_ids), task.support_labels)
    start = context.split("last-2")[1].state_dict()
    assert all(torch.allclose(value, start[key], atol=1e-9) for key, value in frozen_backbone.trainable_.state_dict().items())
    moving = FineTune(TrainingSettings(steps=5, train_layers="last-2", backbone_lr=1e-2)).fit(context.items(task.support_ids), task.support_labels)
    assert any(not torch.allclose(value, start[key]) for key, value in moving.trainable_.state_dict().items())
    assert TrainingSettings(learning_rate=0.05).rates == (0.05, 0.05) and TrainingSettings().rates == (0.01, 1e-4)
    with pytest.raises(TcsFewshotError, match="amp needs a CUDA device"):
        FineTune(TrainingSettings(amp=True)).fit(context.items(task.support_ids), task.support_labels)
    with pytest.raises(TcsFewshotError, match="unknown train_layers"):
        TrainingSettings(train_layers="last-0")


def test_student_methods_on_cuda(setup):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU on this machine")
    from tcs_fewshot.methods.finetune import FineTune
    from tcs_fewshot.methods.student_training import TrainingSettings

    data, teacher, cache = setup
    task = sample_tasks(data.index, SPEC, 1).tasks[0]
    torch.manual_seed(0)
    student = build_student("conv4-16", image_size=32)
    results = {}
    for device in ("cpu", "cuda"):
        context = StudentContext(data, teacher, cache, student, views=1, device=device)
        for name, cls in (("finetune", FineTune), ("tcs", TCS)):
            for amp in ((False, True) if device == "cuda" else (False,)):
                method = cls(TrainingSettings(steps=5, train_layers="last-2", amp=amp))
                results[(name, device, amp)] = method.fit(context.items(task.support_ids), task.support_labels).predict(context.items(task.query_ids))
                assert results[(name, device, amp)].device.type == "cpu"
        assert next(context.split("last-2")[1].parameters()).device.type == device
    for name in ("finetune", "tcs"):
        assert torch.allclose(results[(name, "cuda", False)], results[(name, "cpu", False)], atol=1e-3)
        assert torch.isfinite(results[(name, "cuda", True)]).all()


def small_context(setup, cache=None):
    data, teacher, own_cache = setup
    torch.manual_seed(0)
    return StudentContext(data, teacher, cache or own_cache, build_student("conv4-16", image_size=32), views=1)


def test_student_methods_are_estimators_that_clone(setup):
    from sklearn.base import clone

    from tcs_fewshot.methods.kd import LSHL2
    from tcs_fewshot.methods.student_training import TrainingSettings

    task = sample_tasks(setup[0].index, SPEC, 1).tasks[0]
    context = small_context(setup)
    settings = TrainingSettings(steps=8, learning_rate=0.01, batch_size=5)
    bad = TCS(settings, mimic_loss="nope", prune_fraction=2.0)  # __init__ stores; fit validates
    assert bad.get_params()["mimic_loss"] == "nope" and not hasattr(bad, "head_")
    with pytest.raises(TcsFewshotError, match="unknown mimic loss 'nope'"):
        bad.fit(context.items(task.support_ids), task.support_labels)
    tcs = TCS(settings, components=4)
    assert tcs.fit(context.items(task.support_ids), task.support_labels) is tcs
    assert {"context_", "trainable_", "head_", "system_", "targets_", "history_", "teacher_forward_passes_"} <= set(vars(tcs))
    assert set(TCS().get_params()) >= {"training", "components", "mimic_loss", "transductive"} and "context" not in TCS().get_params()
    with pytest.raises(TcsFewshotError, match=r"pass context.items\(item_ids\)"):
        TCS(settings).fit(task.support_ids, task.support_labels)
    twin = clone(tcs)
    assert twin.get_params() == tcs.get_params() and not hasattr(twin, "head_") and tcs.context_ is context
    assert torch.equal(twin.fit(context.items(task.support_ids), task.support_labels).predict(context.items(task.query_ids)), tcs.predict(context.items(task.query_ids)))
    assert twin.set_params(components=2) is twin and twin.fit(context.items(task.support_ids), task.support_labels).system_.components <= 2
    with pytest.raises(ValueError, match="Invalid parameter 'component'"):
        twin.set_params(component=3)
    lsh = clone(LSHL2(settings, hash_bits=64, ce_weight=0.5))
    assert lsh.get_params()["hash_bits"] == 64 and lsh.get_params()["ce_weight"] == 0.5


def test_loss_terms_are_named_and_logged_every_step(setup):
    from tcs_fewshot.methods.finetune import FineTune
    from tcs_fewshot.methods.kd import FitNets, LogitKD
    from tcs_fewshot.methods.student_training import TrainingSettings

    task = sample_tasks(setup[0].index, SPEC, 1).tasks[0]
    context = small_context(setup)
    settings = TrainingSettings(steps=6, learning_rate=0.01, batch_size=5)
    for cls, options, terms in ((FineTune, {}, {"ce"}), (LogitKD, {}, {"ce", "kd"}), (FitNets, {}, {"ce", "mimic"}),
                                (TCS, {"components": 4, "mimic_loss": "elsh"}, {"ce", "mimic"})):
        method = cls(settings, **options).fit(context.items(task.support_ids), task.support_labels)
        assert [row["step"] for row in method.history_] == list(range(6)), cls.__name__
        for row in method.history_:
            assert set(row) == {"step", "loss", *terms}, (cls.__name__, row)
            assert row["loss"] == pytest.approx(sum(row[term] for term in terms), rel=1e-5, abs=1e-6)
        assert method.losses_ == [row["loss"] for row in method.history_]


def test_transductive_tcs_fits_on_unlabelled_queries_with_the_numbers_of_the_old_predict_path(setup):
    """tests/data/transductive_reference.pt: tests/data/make_transductive_reference.py on the code that trained in predict."""
    from tcs_fewshot.methods.finetune import FineTune
    from tcs_fewshot.methods.student_training import TrainingSettings

    reference = torch.load(Path(__file__).parent / "data" / "transductive_reference.pt", weights_only=True)
    task = sample_tasks(setup[0].index, SPEC, 1).tasks[0]
    assert list(map(str, task.support_ids)) == reference["support_ids"]
    context = small_context(setup)
    for layers in ("head", "last"):
        settings = TrainingSettings(steps=8, learning_rate=0.01, batch_size=5, train_layers=layers)
        for mimic in ("mse", "elsh"):
            method = TCS(settings, components=4, mimic_loss=mimic, transductive=True)
            with pytest.raises(TcsFewshotError, match=r"unlabelled=context.items\(query_ids\)"):
                method.fit(context.items(task.support_ids), task.support_labels)
            logits = method.fit(context.items(task.support_ids), task.support_labels, unlabelled=context.items(task.query_ids)).predict(context.items(task.query_ids))
            key = f"{mimic}/{layers}"
            # Same tolerances, for the same reason, as the reference logits test above.
            assert float((logits - reference[key]).abs().max()) < (1e-4 if layers == "head" else 2e-3), key
            assert np.allclose(method.losses_, reference[f"{key}/losses"].numpy(), rtol=1e-3), key
            assert method.teacher_forward_passes == reference[f"{key}/passes"] == 2 * (SPEC.ways * (SPEC.shots + SPEC.queries))
    with pytest.raises(TcsFewshotError, match="does not train on unlabelled items"):
        FineTune().fit(context.items(task.support_ids), task.support_labels, unlabelled=context.items(task.query_ids))
    # The evaluator hands a transductive method the queries' inputs (never their labels) through fit.
    direct = TCS(settings, components=4, transductive=True)
    expected = direct.fit(context.items(task.support_ids), task.support_labels, unlabelled=context.items(task.query_ids)).predict(context.items(task.query_ids))
    records = evaluate([task], {"tcs": TCS(settings, components=4, transductive=True)}, context.items,
                       measure_memory=False)
    assert records["failure"].isna().all()
    assert records["n_correct"].item() == int((expected.argmax(1).numpy() == task.query_labels).sum())


def test_the_runner_sets_torch_threads_and_fit_does_not(setup, monkeypatch):
    from tcs_fewshot.methods.finetune import FineTune
    from tcs_fewshot.methods.student_training import TrainingSettings
    from tcs_fewshot.runs.rows import Episode, run_method

    task = sample_tasks(setup[0].index, SPEC, 1).tasks[0]
    context = small_context(setup)
    method = FineTune(TrainingSettings(steps=2, threads=2))
    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    method.fit(context.items(task.support_ids), task.support_labels)
    assert calls == [], "fit leaves torch's process-wide thread count alone"
    episode = Episode.from_task(task, context.items)
    row = run_method(method, episode, measure_memory=False)
    assert row.get("failure") is None and calls == [2, torch.get_num_threads()], "the runner sets 2 for the fit, then restores"
