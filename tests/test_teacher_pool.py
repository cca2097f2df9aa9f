"""Teacher spec options: ``timm:<vit>@pool=cls|mean|cls+mean,block=N`` pick the ViT tokens, keyed in the cache."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from tcs_fewshot.data.benchmarks.base import BenchmarkData
from tcs_fewshot.data.index import LabelIndex
from tcs_fewshot.errors import TcsFewshotError
from tcs_fewshot.cache.feature_cache import FeatureCache
from tcs_fewshot.models.teacher_spec import split_spec
from tcs_fewshot.models.teachers import load_teacher, save_teacher_checkpoint
from tcs_fewshot.models.vit_pool import POOLS, TokenPooledViT, pool_tokens

SPEC = "timm:vit_tiny_patch16_224"


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A random-weight ViT-Ti/16 at 32 px (a 2x2 patch grid), saved as a state dict."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("vit") / "vit.pth"
    torch.save(timm.create_model(SPEC[5:], pretrained=False, num_classes=0, img_size=32).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def x():
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def one_line(match, function, *args, **kwargs):
    with pytest.raises(TcsFewshotError, match=match) as caught:
        function(*args, **kwargs)
    assert "\n" not in str(caught.value)


def test_pools_give_cls_mean_and_both_of_one_forward_pass(weights, x):
    plain = load_teacher(SPEC, weights)
    with torch.inference_mode():
        tokens = plain.model.forward_features(x)  # (3, 1 + 4, 192)
        got = {pool: load_teacher(f"{SPEC}@pool={pool}", weights) for pool in POOLS}
        out = {pool: teacher.model(x) for pool, teacher in got.items()}
        reference = plain.model(x)
    assert tokens.shape == (3, 5, 192)
    assert {pool: (got[pool].feature_dim, tuple(out[pool].shape)) for pool in POOLS} == {
        "cls": (192, (3, 192)), "mean": (192, (3, 192)), "cls+mean": (384, (3, 384))}
    torch.testing.assert_close(out["cls"], reference)  # timm's own DINOv2 feature
    torch.testing.assert_close(out["mean"], tokens[:, 1:].mean(1))
    torch.testing.assert_close(out["cls+mean"], torch.cat([reference, tokens[:, 1:].mean(1)], 1))
    assert all(teacher.model.block == 12 for teacher in got.values())
    assert got["mean"].name == f"{SPEC}@pool=mean" and got["mean"].config["options"] == {"pool": "mean"}


def test_block_reads_that_blocks_output_through_the_final_norm(weights, x):
    plain = load_teacher(SPEC, weights).model
    outputs = []
    hooks = [block.register_forward_hook(lambda _m, _i, out: outputs.append(out)) for block in plain.blocks]
    with torch.inference_mode():
        plain(x)
        for hook in hooks:
            hook.remove()
        for block in (1, 11, 12):
            for pool in POOLS:
                got = load_teacher(f"{SPEC}@block={block},pool={pool}", weights).model(x)
                torch.testing.assert_close(got, pool_tokens(plain.norm(outputs[block - 1]), pool))
        # block alone keeps the model's own pooling (DINOv2 and ViT-Ti: the CLS token)
        torch.testing.assert_close(load_teacher(f"{SPEC}@block=11", weights).model(x), plain.norm(outputs[10])[:, 0])
    one_line("outside this ViT's blocks 1 to 12", load_teacher, f"{SPEC}@block=13", weights)


def test_mean_skips_register_tokens():
    tokens = torch.arange(2 * 6 * 2, dtype=torch.float32).reshape(2, 6, 2)  # cls, 2 registers, 3 patches
    torch.testing.assert_close(pool_tokens(tokens, "mean", prefix=3), tokens[:, 3:].mean(1))
    torch.testing.assert_close(pool_tokens(tokens, "cls", prefix=3), tokens[:, 0])


def test_each_pool_is_its_own_identity_and_cache_entry(weights, tmp_path):
    plain = load_teacher(SPEC, weights)
    specs = [SPEC] + [f"{SPEC}@pool={pool}" for pool in POOLS] + [f"{SPEC}@block=11"]
    identities = {load_teacher(spec, weights).identity for spec in specs}
    assert len(identities) == 5
    # the order of options does not matter
    assert load_teacher(f"{SPEC}@pool=mean,block=11", weights).identity == \
        load_teacher(f"{SPEC}@block=11,pool=mean", weights).identity
    # a plain spec keeps the identity it had before options existed: its cached features stay valid
    config = plain.config
    old = [config["architecture"], config["weights_sha256"], config["preprocessing"], config["layer"]]
    assert plain.identity == hashlib.sha256(json.dumps(old, sort_keys=True).encode()).hexdigest()

    rng = np.random.default_rng(0)
    ids = [f"c{i % 2}/{i}.png" for i in range(4)]
    images = {i: Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)) for i in ids}
    data = BenchmarkData(LabelIndex.from_items(ids, [i[:2] for i in ids], name="tiny"), "all",
                         lambda i: images[i].copy(), Path("."))
    cache = FeatureCache(tmp_path)
    shapes = {spec: cache.features(load_teacher(spec, weights), data).shape for spec in specs}
    assert cache.forward_passes == 5 * len(ids)  # nothing served across pools or blocks
    assert shapes[f"{SPEC}@pool=cls+mean"] == (4, 1, 384) and shapes[f"{SPEC}@pool=mean"] == (4, 1, 192)


def test_a_pooled_teacher_checkpoint_round_trips(weights, x, tmp_path):
    teacher = load_teacher(f"{SPEC}@pool=mean", weights)
    path = save_teacher_checkpoint(teacher, tmp_path / "t.pt")
    again = load_teacher(f"checkpoint:{path}@pool=mean")
    with torch.inference_mode():
        torch.testing.assert_close(again.model(x), teacher.model(x))
    assert again.config["architecture"] == SPEC and again.feature_dim == 192
    assert load_teacher(f"checkpoint:{path}").identity != again.identity


def test_spec_options_parse_and_paths_with_at_signs_stay_whole():
    assert split_spec(SPEC) == (SPEC, {})
    assert split_spec(f"{SPEC}@pool=cls+mean") == (SPEC, {"pool": "cls+mean"})
    assert split_spec("checkpoint:runs/a@b.pt") == ("checkpoint:runs/a@b.pt", {})


@pytest.mark.parametrize("spec, match", [
    (f"{SPEC}@pool=max", "unknown ViT token pooling 'max'; choose one of: cls, mean, cls\\+mean"),
    (f"{SPEC}@depth=3", "unknown teacher option 'depth'"),
    (f"{SPEC}@block=0", "must be a block number from 1"),
    (f"{SPEC}@pool", "must be key=value pairs"),
    (f"{SPEC}@pool=cls,pool=mean", "given twice"),
])
def test_bad_options_fail_on_one_line(spec, match, weights):
    one_line(match, load_teacher, spec, weights)


def test_pool_on_a_network_without_tokens_fails_on_one_line(tmp_path):
    torch.save(timm.create_model("resnet10t", pretrained=False, num_classes=0).state_dict(), tmp_path / "r.pth")
    one_line("need a ViT with a CLS token", load_teacher, "timm:resnet10t@pool=mean", tmp_path / "r.pth")
    one_line("are for timm ViTs", load_teacher, "torchvision:mobilenet_v2@pool=mean")
    with pytest.raises(TcsFewshotError):
        TokenPooledViT(torch.nn.Linear(2, 2), "cls")


def test_cli_bad_option_exits_2_on_one_line_before_the_data_loads(weights, tmp_path):
    from cli_invoke import invoke

    for option, expected in [("pool=max", "unknown ViT token pooling 'max'"), ("block=x", "block number")]:
        outcome = invoke(["run", "--benchmark", "emoji", "--root", str(tmp_path / "never-built"), "--teacher",
                          f"{SPEC}@{option}", "--teacher-weights", str(weights), "--tasks", "1", "--methods", "ncm",
                          "--no-progress", "--out", str(tmp_path / "run")])
        assert outcome.exit_code == 2, outcome.stderr
        assert len(outcome.error_lines()) == 1 and expected in outcome.error_lines()[0], outcome.stderr
        assert not (tmp_path / "never-built").exists()  # refused before the benchmark was built
