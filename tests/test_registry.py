"""The one method registry: every entry declares what it consumes and builds from one MethodInputs."""

import numpy as np
import pytest

from tcs_fewshot.data.tasks import TaskSpec, sample_tasks
from tcs_fewshot.errors import TcsFewshotError
from tcs_fewshot.methods.registry import (
    FEATURES,
    IMAGES,
    METHODS,
    PIXELS,
    MethodEntry,
    MethodInputs,
    build_method,
    build_probe,
    entry,
    is_headline,
    method_kind,
    method_names,
)
from tcs_fewshot.runs.evaluator import evaluate
from tcs_fewshot.runs.experiment import RunConfig, silent_fallbacks, student_options
from tcs_fewshot.runs.method_setup import build_methods


def test_every_entry_declares_what_it_consumes():
    assert {value.consumes for value in METHODS.values()} == {FEATURES, PIXELS, IMAGES}
    assert method_names(FEATURES) == ["ncm", "simpleshot", "logreg"] and method_names(PIXELS) == ["pixel-ncm"]
    assert "tcs" in method_names(IMAGES) and "finetune" in method_names(IMAGES)
    assert method_kind("tcs@kd") == IMAGES and entry("student-ncm@tcs") is not METHODS["student-ncm"]
    assert [name for name in METHODS if METHODS[name].transductive] == [name for name in METHODS if name.startswith("tcs")]
    assert is_headline("tcs-random") and is_headline("student-ncm@tcs") and not is_headline("student-ncm@kd")
    assert not is_headline("kd") and not is_headline("not-a-method")
    with pytest.raises(TcsFewshotError, match="unknown method 'nope'"):
        entry("nope")


def test_probes_build_from_one_inputs_object():
    mean = np.arange(4.0)
    simpleshot = build_method("simpleshot", MethodInputs(base_mean=mean))
    assert np.array_equal(simpleshot.base_mean, mean) and np.array_equal(build_probe("simpleshot", mean).base_mean, mean)
    with pytest.raises(TcsFewshotError, match="choose from: ncm, simpleshot, logreg"):
        build_probe("tcs")
    with pytest.raises(TcsFewshotError, match="unrelated images"):
        build_method("tcs-unrelated", MethodInputs())


class MedianNCM:
    """A user's probe: nothing of ours subclassed, only fit/predict."""

    def fit(self, features, labels):
        labels = np.asarray(labels)
        self.medians_ = np.stack([np.median(features[labels == c], axis=0) for c in range(labels.max() + 1)])
        return self

    def predict(self, features):
        return -((features[:, None, :] - self.medians_[None]) ** 2).sum(-1)


def test_a_user_method_is_one_registry_line(toy_index, toy_features, monkeypatch):
    monkeypatch.setitem(METHODS, "median-ncm", MethodEntry(FEATURES, lambda inputs: MedianNCM(), "nearest class median"))
    methods, inputs, settings = build_methods(["ncm", "median-ncm"], toy_features, None)
    assert isinstance(methods["median-ncm"], MedianNCM) and inputs["median-ncm"] is toy_features
    assert settings["median-ncm"]["deployed"]["network"] == "teacher"
    tasks = sample_tasks(toy_index, TaskSpec(split="test", ways=3, shots=2, queries=5, seed=0), 4)
    records = evaluate(tasks, methods, inputs, measure_memory=False)
    assert records["failure"].isna().all() and records["accuracy"].between(0, 1).all()


def test_run_settings_follow_the_entries_declarations(monkeypatch):
    config = RunConfig(methods=("ncm", "simpleshot", "tcs", "tcs-noselect", "kd", "student-ncm@tcs"), transductive=True)
    options = student_options(config).options
    assert set(options) == {"tcs", "tcs-noselect"} and all(value == {"transductive": True} for value in options.values())
    assert silent_fallbacks(config, {}, None, None) == [
        "simpleshot centres on each task's support mean (no base split disjoint from the evaluated classes)"]
    monkeypatch.setitem(METHODS, "centred", MethodEntry(FEATURES, lambda inputs: None, "x", uses_base_mean=True))
    assert silent_fallbacks(RunConfig(methods=("centred",)), {}, None, None)[0].startswith("centred centres")
    assert silent_fallbacks(RunConfig(methods=("centred",)), {}, np.zeros(3), None) == []
