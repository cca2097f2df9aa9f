"""Students: the compact networks TCS, KD and fine-tuning train, and what they cost.

A student maps ``(B, 3, H, W)`` float images (normalised with its ``mean``/``std``) to
``(B, feature_dim)`` features. Specs:

* ``conv4`` / ``conv4-<channels>``: the classic four conv3x3-BN-ReLU-maxpool blocks (64
  channels by default), global-average-pooled; ``feature_dim`` = channels.
* ``resnet12``: the few-shot ResNet-12 of MetaOptNet/RFS (channels 64-160-320-640, 12.4M
  parameters), without DropBlock; ``feature_dim`` = 640.
* ``torchvision:<name>``: a ``torchvision.models.get_model`` network, its classifier dropped
  (pooled penultimate features; ``torchvision:mobilenet_v2``: 1280).
* ``timm:<name>``: a timm model with ``num_classes=0`` (its pooled penultimate features).

Initialisation (``init``, stated explicitly or defaulted: ``pretrained`` for torchvision/timm
specs, ``scratch`` for conv4/resnet12): ``scratch`` draws weights from torch's global RNG, so
the caller seeds it (``torch.manual_seed``) for reproducible students; ``pretrained`` reads local
weights only (:mod:`student_backbones`: the offline ImageNet MobileNetV2 package, torch hub's
cache, the Hugging Face cache, or a ``weights`` file), never the network, and normalises with
the weights' own mean/std; ``checkpoint`` loads a file written by :func:`save_student`. The
config records the weights file, its sha256 and its pretraining data. Students come back in eval
mode; trainers call ``.train()``.

The default student (:data:`DEFAULT_STUDENT` at :data:`DEFAULT_STUDENT_IMAGE_SIZE` px) is the
ImageNet MobileNetV2: about 49 MFLOPs per 64 px image against the default teacher's 599 at 224 px.
"""

from __future__ import annotations

import json
import os
import pickle
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tcs_fewshot.defaults import DEFAULT_STUDENT, DEFAULT_STUDENT_IMAGE_SIZE  # noqa: F401 (re-exported)
from tcs_fewshot.errors import TcsFewshotError
from tcs_fewshot.models.student_backbones import SOURCES, pretrained_backbone, scratch_backbone
from tcs_fewshot.checksums import file_sha256

DEFAULT_IMAGE_SIZE = 84  # px; the few-shot convention, and CPU-sized (see ENVIRONMENT.md)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INITS = ("scratch", "pretrained", "checkpoint")


@dataclass(eq=False)
class Student:
    """A built student.

    Attributes:
        name: Canonical spec (``conv4``, ``conv4-32``, ``resnet12``, ``timm:resnet10t``).
        model: ``(B, 3, image_size, image_size)`` float -> ``(B, feature_dim)`` float.
        feature_dim: Width of the features.
        image_size: Side in px of the square input it expects (the GAP makes CNNs accept
            other sizes, but FLOPs and transforms use this one).
        mean, std: Per-channel normalisation applied after scaling pixels to [0, 1].
        config: JSON-able description for run manifests and checkpoints.
    """

    name: str
    model: nn.Module
    feature_dim: int
    image_size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    config: dict[str, Any] = field(default_factory=dict)


class Conv4(nn.Module):
    """Four conv3x3(+bias)-BN-ReLU-maxpool2 blocks, then global average pooling: ``(B, channels)``."""

    def __init__(self, channels: int = 64) -> None:
        super().__init__()
        blocks, width = [], 3
        for _ in range(4):
            blocks += [nn.Conv2d(width, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            width = channels
        self.features = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # GAP rather than flattening, so the feature width does not depend on the input size.
        return self.features(x).mean(dim=(2, 3))


class _ResBlock12(nn.Module):
    """Three conv3x3-BN (LeakyReLU 0.1 between), a conv1x1-BN shortcut, LeakyReLU, maxpool 2."""

    def __init__(self, inplanes: int, planes: int) -> None:
        super().__init__()

        def conv_bn(cin: int, k: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, planes, k, padding=k // 2, bias=False), nn.BatchNorm2d(planes)]

        self.body = nn.Sequential(
            *conv_bn(inplanes, 3), nn.LeakyReLU(0.1), *conv_bn(planes, 3), nn.LeakyReLU(0.1), *conv_bn(planes, 3)
        )
        self.shortcut = nn.Sequential(*conv_bn(inplanes, 1))
        self.out = nn.Sequential(nn.LeakyReLU(0.1), nn.MaxPool2d(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x) + self.shortcut(x))


class ResNet12(nn.Module):
    """ResNet-12 as in MetaOptNet/RFS (DropBlock left out): ``(B, 3, H, W)`` -> ``(B, 640)``."""

    def __init__(self, channels: tuple[int, ...] = (64, 160, 320, 640)) -> None:
        super().__init__()
        widths = (3, *channels)
        self.layers = nn.Sequential(*(_ResBlock12(widths[i], widths[i + 1]) for i in range(len(channels))))
        for module in self.modules():  # RFS's initialisation
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="leaky_relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x).mean(dim=(2, 3))


def build_student(spec: str, init: str | None = None, checkpoint: Path | None = None, image_size: int | None = None,
                  weights: str | os.PathLike | None = None) -> Student:
    """Build the student ``spec`` initialised by ``init`` (see the module docstring).

    ``init`` defaults to ``pretrained`` for ``torchvision:``/``timm:`` specs and ``scratch`` for
    conv4/resnet12. ``weights`` (pretrained only) is a state dict file instead of the local caches.
    ``image_size`` (px) defaults to the checkpoint's, else 64 for the default student, else 84. The student is returned on the
    CPU in eval mode. Raises :class:`TcsFewshotError` (one line) for an unknown spec or init,
    missing pretrained weights, a checkpoint of another spec, or an image size too small.
    """
    name = _canonical(spec)
    has_weights = name.split(":")[0] in SOURCES
    init = init or ("checkpoint" if checkpoint is not None else "pretrained" if has_weights else "scratch")
    if init not in INITS:
        raise TcsFewshotError(f"unknown student init '{init}'; choose one of {', '.join(INITS)}")
    if (init == "checkpoint") != (checkpoint is not None):
        raise TcsFewshotError("a student checkpoint goes with init 'checkpoint', and init 'checkpoint' needs one (--student-checkpoint)")
    if init == "pretrained" and not has_weights:
        raise TcsFewshotError(f"student '{name}' has no pretrained weights; use init 'scratch' or --student-checkpoint")
    if weights is not None and init != "pretrained":
        raise TcsFewshotError(f"--student-weights goes with init 'pretrained', not '{init}'")
    saved = _read_checkpoint(Path(checkpoint), name) if checkpoint is not None else None
    config: dict[str, Any] = {"spec": name, "init": init}
    if init == "pretrained":
        model, record = pretrained_backbone(name, weights)
        mean, std = tuple(record.pop("mean") or IMAGENET_MEAN), tuple(record.pop("std") or IMAGENET_STD)
        config.update(record)
    else:
        model, mean, std = _architecture(name)
    if saved is not None:
        _load_state(model, saved["state_dict"], checkpoint, name)
        # Keep what the checkpoint's writer recorded (e.g. distillation settings, the weights it
        # started from); the student was trained with its normalisation, so that overrides the default.
        config = {**saved["config"], "spec": name, "init": "checkpoint", "checkpoint": str(checkpoint), "checkpoint_sha256": file_sha256(checkpoint)}
        mean, std = tuple(config.get("mean", mean)), tuple(config.get("std", std))
        image_size = image_size or config.get("image_size")
    model.eval()
    image_size = int(image_size or (DEFAULT_STUDENT_IMAGE_SIZE if name == DEFAULT_STUDENT else DEFAULT_IMAGE_SIZE))
    try:  # measured, so every spec (and timm's head quirks) is right, and the size is known to work
        with torch.no_grad():
            feature_dim = int(model(torch.zeros(1, 3, image_size, image_size)).shape[1])
    except RuntimeError as error:
        raise TcsFewshotError(f"student '{name}' cannot take {image_size} px images ({str(error).splitlines()[0]}); use a larger image size") from None
    config.update(image_size=image_size, mean=list(mean), std=list(std), feature_dim=feature_dim, parameters=count_parameters(model))
    return Student(name, model, feature_dim, image_size, mean, std, config)


def save_student(student: Student, path: str | os.PathLike) -> None:
    """Write ``{"spec", "state_dict", "config"}`` atomically: a crash leaves the old file or the new one.

    ``config`` is stored as JSON values (others become strings), so the file loads with
    ``torch.load(weights_only=True)`` and the config can go straight into a run manifest.
    """
    path = Path(path)
    temporary = path.with_name(path.name + ".partial")
    state = {key: value.detach().cpu() for key, value in student.model.state_dict().items()}
    config = json.loads(json.dumps(student.config, default=str))
    with open(temporary, "wb") as handle:
        torch.save({"spec": student.name, "state_dict": state, "config": config}, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def student_resize(student: Student) -> Callable[[Any], Any]:
    """RGB PIL image -> the square ``image_size`` px PIL image every student path trains and predicts on."""
    from torchvision import transforms

    return transforms.Resize((student.image_size, student.image_size))  # square, so batches stack


def student_transform(student: Student) -> Callable[[Any], torch.Tensor]:
    """RGB PIL image -> ``(3, image_size, image_size)`` float tensor, normalised like the student's training."""
    from torchvision import transforms

    return transforms.Compose([
        student_resize(student),
        transforms.ToTensor(),
        transforms.Normalize(student.mean, student.std),
    ])


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not; buffers such as BN statistics excluded)."""
    return sum(parameter.numel() for parameter in model.parameters())


def flops_per_image(model: Student | nn.Module, image_size: int | None = None) -> int:
    """FLOPs of one forward pass on a ``(1, 3, image_size, image_size)`` input (px; a Student's own by default).

    Counted by ``torch.utils.flop_counter.FlopCounterMode``: 2 x multiply-accumulates of
    convolutions and matrix products (which dominate); norms, activations and pools are not counted.
    Works for any module, so teachers and students are measured the same way.
    """
    from torch.utils.flop_counter import FlopCounterMode

    if isinstance(model, Student):
        model, image_size = model.model, image_size or model.image_size
    if image_size is None:
        raise TcsFewshotError("flops_per_image needs image_size (px) for a plain module")
    reference = next(model.parameters(), torch.zeros(()))
    dummy = torch.zeros(1, 3, image_size, image_size, device=reference.device, dtype=reference.dtype)
    was_training = model.training
    model.eval()  # BN must not update its running statistics on the dummy input
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(dummy)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def _canonical(spec: str) -> str:
    spec = spec.strip()
    source, _, model_name = spec.partition(":")
    if source in SOURCES and model_name:
        return f"{source}:{model_name}"
    match = re.fullmatch(r"conv4(?:-(\d+))?", spec.lower())
    if match:
        channels = int(match.group(1) or 64)
        if channels < 1:
            raise TcsFewshotError(f"student '{spec}' needs at least one channel")
        return "conv4" if channels == 64 else f"conv4-{channels}"
    if spec.lower() == "resnet12":
        return "resnet12"
    raise TcsFewshotError(f"unknown student '{spec}'; use conv4, conv4-<channels>, resnet12, torchvision:<model> or timm:<model>")


def _architecture(name: str) -> tuple[nn.Module, tuple[float, ...], tuple[float, ...]]:
    """The randomly initialised module of canonical spec ``name`` with its (mean, std)."""
    if name == "resnet12":
        return ResNet12(), IMAGENET_MEAN, IMAGENET_STD
    if name.startswith("conv4"):
        return Conv4(int(name[6:] or 64)), IMAGENET_MEAN, IMAGENET_STD
    model, mean, std = scratch_backbone(name)
    return model, mean or IMAGENET_MEAN, std or IMAGENET_STD


def _read_checkpoint(path: Path, name: str) -> dict[str, Any]:
    if not path.is_file():
        raise TcsFewshotError(f"student checkpoint '{path}' does not exist")
    try:
        # weights_only: a checkpoint is data (tensors, strings, numbers), never code to run.
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, EOFError, RuntimeError, ValueError) as error:  # what torch raises for other files
        raise TcsFewshotError(f"'{path}' is not a student checkpoint ({type(error).__name__}); pass a file written by tcs-fewshot distill") from None
    if not isinstance(saved, dict) or not {"spec", "state_dict", "config"} <= set(saved):
        raise TcsFewshotError(f"'{path}' is not a student checkpoint (no spec/state_dict/config); pass a file written by tcs-fewshot distill")
    if saved["spec"] != name:
        raise TcsFewshotError(f"student checkpoint '{path}' holds a '{saved['spec']}' student, not '{name}'; use student '{saved['spec']}' with it")
    return saved


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], path: Path, name: str) -> None:
    expected = model.state_dict()
    differ = sorted(set(expected) ^ set(state)) + [key for key in expected if key in state and expected[key].shape != state[key].shape]
    if differ:  # torch's own message spans many lines; name the first culprit instead
        raise TcsFewshotError(f"student checkpoint '{path}' does not fit a '{name}' student ({len(differ)} tensors differ, first '{differ[0]}')")
    model.load_state_dict(state)
