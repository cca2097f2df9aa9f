"""`tcs-fewshot distill` data-parallel under torchrun (2 processes, gloo) equals one process."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from tcs_fewshot.methods.distributed import (
    AllReduceBatchNorm,
    all_reduce_batch_norm,
    freeze_biases_before_batch_norm,
    plain_batch_norm,
)
from tcs_fewshot.models.students import build_student


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """9 classes x 6 noisy coloured 24 px images, split 3/3/3, as a folder benchmark."""
    root = tmp_path_factory.mktemp("shapes")
    for c in range(9):
        (root / "images" / f"class{c}").mkdir(parents=True)
        colour = np.random.default_rng(c).integers(20, 236, size=3)
        for i in range(6):
            noise = np.random.default_rng(100 * c + i).integers(-30, 31, size=(24, 24, 3))
            Image.fromarray((colour + noise).clip(0, 255).astype(np.uint8)).save(root / "images" / f"class{c}" / f"{i}.png")
    splits = {"train": [f"class{c}" for c in range(3)], "val": [f"class{c}" for c in range(3, 6)],
              "test": [f"class{c}" for c in range(6, 9)]}
    (root / "splits.json").write_text(json.dumps(splits))
    return root


def distill_command(shapes, out):
    return ["distill", "--benchmark", "folder", "--root", str(shapes / "images"), "--split-file", str(shapes / "splits.json"),
            "--student", "conv4-8", "--image-size", "24", "--epochs", "2", "--set", "views=1", "--set", "batch_size=8",
            "--set", "components=4", "--set", "ce_weight=1.0", "--set", "val_tasks=0", "--set", "head_lr=2e-3",
            "--set", "backbone_lr=2e-3", "--out", str(out)]


def test_two_processes_give_the_single_process_checkpoint(shapes, tmp_path):
    single, parallel = tmp_path / "single.pt", tmp_path / "ddp.pt"
    one = subprocess.run([sys.executable, "-m", "tcs_fewshot.cli", *distill_command(shapes, single)],
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "tcs_fewshot.cli", *distill_command(shapes, parallel)],
                         capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    a = torch.load(single, weights_only=True)
    b = torch.load(parallel, weights_only=True)
    assert a["state_dict"].keys() == b["state_dict"].keys()
    # The conv biases before batch norm have an exactly zero gradient; once Adam scaled their
    # rounding noise into 1e-3 steps that differed by machine. They are frozen: equal bit for bit.
    for key in [f"features.{i}.bias" for i in (0, 4, 8, 12)]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    # Otherwise the two runs differ only in float rounding (a gradient summed in two halves).
    # Parameters with a real gradient follow the same path; the last block's batch-norm scale
    # moves along a direction the distillation's feature standardisation removes, where Adam
    # turns rounding noise into steps of the learning rate. So the check is on the convolution
    # weights and on the function the students compute (standardised features).
    # Adam's early steps are about lr * sign(gradient) wherever a gradient is near zero, so the
    # rounding of a gradient summed in two halves can move single weights by part of a step
    # (backbone_lr = 2e-3; 1e-3 was seen on an AMD EPYC, under 1e-4 on an Intel Xeon). So each
    # convolution is compared as a whole: its relative change must stay below 1%, which a real
    # difference (a batch split wrongly, a gradient not averaged) exceeds many times over.
    for key, value in a["state_dict"].items():
        if key.endswith(".weight") and value.dim() == 4:
            relative = float((value - b["state_dict"][key]).norm() / value.norm())
            assert relative < 1e-2, (key, relative)
    x = torch.randn(16, 3, 24, 24)
    with torch.no_grad():  # batch statistics, as in training: free of the running means' lag
        features = [build_student("conv4-8", "checkpoint", path).model.train()(x) for path in (single, parallel)]
    standardised = [(f - f.mean(0)) / f.std(0) for f in features]
    assert torch.allclose(*standardised, atol=2e-2), (standardised[0] - standardised[1]).abs().max()
    assert a["config"]["distilled"]["history"][-1]["ce"] == pytest.approx(b["config"]["distilled"]["history"][-1]["ce"], rel=1e-3)
    assert build_student("conv4-8", "checkpoint", parallel).image_size == 24


def test_all_reduce_batch_norm_in_a_world_of_one_is_batch_norm(tmp_path):
    import torch.distributed as dist

    torch.manual_seed(0)
    model = build_student("conv4-8", image_size=16).model.train()
    reference = build_student("conv4-8", image_size=16).model.train()
    reference.load_state_dict(model.state_dict())
    all_reduce_batch_norm(model)
    assert sum(isinstance(m, AllReduceBatchNorm) for m in model.modules()) == 4
    x = torch.randn(6, 3, 16, 16)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'group'}", rank=0, world_size=1)
    try:
        assert torch.allclose(model(x), reference(x), atol=1e-5), "training-mode statistics"
    finally:
        dist.destroy_process_group()
    plain_batch_norm(model)
    assert not any(isinstance(m, AllReduceBatchNorm) for m in model.modules())
    for key, value in reference.state_dict().items():
        assert torch.allclose(model.state_dict()[key].float(), value.float(), atol=1e-5), f"running statistics: {key}"


def test_biases_before_batch_norm_are_frozen_and_change_nothing():
    torch.manual_seed(0)
    model = build_student("conv4-8", image_size=16).model.train()
    assert freeze_biases_before_batch_norm(model) == [f"features.{i}.bias" for i in (0, 4, 8, 12)]
    x = torch.randn(6, 3, 16, 16)
    before = model(x)
    with torch.no_grad():
        model.features[4].bias.add_(0.5)  # batch norm subtracts it again
    assert torch.allclose(model(x), before, atol=1e-5)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert "features.4.weight" in trainable and "features.4.bias" not in trainable
