"""The torchvision and timm networks a student can be: built from scratch, or from local pretrained weights.

A backbone maps ``(B, 3, H, W)`` float images to ``(B, feature_dim)`` pooled penultimate
features: the classifier (torchvision's last linear layer, timm's head) is dropped. Pretrained
weights are read exactly as a teacher's (:func:`tcs_fewshot.models.teachers.load_teacher`): the
offline ImageNet MobileNetV2 package for ``torchvision:mobilenet_v2``, torch hub's cache for other
torchvision models, the local Hugging Face cache for timm, or an explicit weights file; never the
network.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from tcs_fewshot.errors import TcsFewshotError
from tcs_fewshot.models.install_weights import PIP_COMMAND

SOURCES = ("torchvision", "timm")
INSTALL_HINT = "python -m tcs_fewshot.models.install_weights"


def scratch_backbone(name: str) -> tuple[nn.Module, tuple[float, ...] | None, tuple[float, ...] | None]:
    """``(model, mean, std)`` of spec ``torchvision:<m>`` or ``timm:<m>`` with random weights (torch's global RNG).

    ``mean``/``std`` are those of the model's published weights (``None``: the caller's default).
    """
    source, _, model_name = name.partition(":")
    if source == "timm":
        import timm

        try:
            model = timm.create_model(model_name, pretrained=False, num_classes=0)
        except RuntimeError as error:
            raise TcsFewshotError(f"student '{name}': {str(error).splitlines()[0]} (see timm.list_models())") from None
        config = model.pretrained_cfg
        return model, tuple(config.get("mean", ())) or None, tuple(config.get("std", ())) or None
    from torchvision import models

    try:
        model = models.get_model(model_name, weights=None)
    except ValueError:
        raise TcsFewshotError(f"unknown torchvision model '{model_name}' in student '{name}'; list them with "
                              "torchvision.models.list_models()") from None
    _drop_last_linear(model, name)
    return model, None, None


def pretrained_backbone(name: str, weights: str | Path | None) -> tuple[nn.Module, dict[str, Any]]:
    """``(model, record)``: ``name`` with local pretrained weights (``weights`` a file, else the caches).

    ``record`` holds ``weights``, ``weights_sha256``, ``pretraining`` (e.g. ``ImageNet-1k``) and
    the weights' ``mean``/``std``. A missing file is a one-line error naming the install command.
    """
    from tcs_fewshot.models.teachers import load_teacher

    if weights is not None and not Path(weights).expanduser().is_file():
        raise TcsFewshotError(f"student weights '{weights}' do not exist; pass an existing file to --student-weights")
    try:
        network = load_teacher(name, weights)
    except TcsFewshotError as error:
        message = str(error).replace("--teacher-weights", "--student-weights")
        if PIP_COMMAND in message or "not installed" in message:
            message += f" (or: {INSTALL_HINT})"
        raise TcsFewshotError(f"student '{name}': {message}; or use --student-init scratch") from None
    model = network.model.requires_grad_(True)
    classifier = getattr(model, "classifier", None)
    if isinstance(classifier, nn.Sequential):  # torchvision's head: (Dropout, Linear -> Identity)
        drop_head_dropout(classifier)
    preprocessing = network.config.get("preprocessing", {})
    record = {"weights": network.config["weights"], "weights_sha256": network.config["weights_sha256"],
              "pretraining": network.pretraining, "mean": list(preprocessing.get("mean") or ()),
              "std": list(preprocessing.get("std") or ())}
    return model, record


def _drop_last_linear(model: nn.Module, name: str) -> None:
    """Replace torchvision's classifier (its last linear layer) by the identity: pooled features come out."""
    linears = [module_name for module_name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise TcsFewshotError(f"student '{name}' has no linear classifier to drop; use another model")
    parent, _, child = linears[-1].rpartition(".")
    setattr(model.get_submodule(parent), child, nn.Identity())
    drop_head_dropout(model.get_submodule(parent))


def drop_head_dropout(head: nn.Module) -> None:
    """The dropout beside a dropped classifier becomes the identity: in training it would drop pooled features."""
    for name, module in head.named_children():
        if isinstance(module, nn.Dropout):
            setattr(head, name, nn.Identity())
