"""TCS components: coordinate system, feature selection, eLSH targets, folding, student split."""

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA

from tcs_fewshot.errors import TcsFewshotError
from tcs_fewshot.methods.coordinates import CoordinateSystem, lsh_codes, random_planes
from tcs_fewshot.methods.student_context import split_student
from tcs_fewshot.models.student_blocks import student_blocks
from tcs_fewshot.methods.tcs import TCS, CoordinateHead, ridge_projector
from tcs_fewshot.models.students import build_student


@pytest.fixture
def teacher_features():
    rng = np.random.default_rng(0)
    # 40 rows in 64 dims with a decaying spectrum, like pooled CNN features.
    return torch.from_numpy(rng.normal(size=(40, 64)) * np.linspace(3, 0.1, 64) + 2.0).float()


def test_pca_basis_and_coordinates_match_scikit_learn(teacher_features):
    system = CoordinateSystem.fit(teacher_features, components=10, scale="raw")
    reference = PCA(n_components=10).fit(teacher_features.numpy())
    signs = np.sign((system.basis.numpy() * reference.components_).sum(1))
    assert np.allclose(system.basis.numpy() * signs[:, None], reference.components_, atol=1e-4)
    ours = system.coordinates(teacher_features).numpy() * signs
    assert np.allclose(ours, reference.transform(teacher_features.numpy()), atol=1e-3)
    assert np.allclose(system.explained.numpy(), reference.explained_variance_ratio_, atol=1e-5)


def test_whitened_coordinates_have_unit_variance_and_spectrum_keeps_ratios(teacher_features):
    whitened = CoordinateSystem.fit(teacher_features, components=8, scale="whiten").coordinates(teacher_features)
    assert np.allclose(whitened.std(0, unbiased=True).numpy(), 1.0, atol=1e-4)
    spectrum = CoordinateSystem.fit(teacher_features, components=8, scale="spectrum").coordinates(teacher_features)
    spread = spectrum.std(0).numpy()
    assert spread[0] == pytest.approx(1.0, abs=1e-4) and np.all(np.diff(spread) <= 1e-6), "decreasing variances kept"


def test_rank_limit_with_fewer_samples_than_dimensions(teacher_features):
    one_shot = teacher_features[:5]  # 5-way 1-shot, no views: rank n - 1 = 4
    system = CoordinateSystem.fit(one_shot, components=32)
    assert system.rank == 4 and system.components == 4
    assert torch.isfinite(system.coordinates(one_shot)).all()
    assert CoordinateSystem.fit(teacher_features, components=32, explained_variance=0.5).components < 10
    with pytest.raises(TcsFewshotError, match="no variance"):
        CoordinateSystem.fit(torch.ones(6, 8))
    with pytest.raises(TcsFewshotError, match="N >= 2"):
        CoordinateSystem.fit(teacher_features[:1])


def test_random_orthogonal_basis_is_orthonormal_and_seeded(teacher_features):
    make = lambda: CoordinateSystem.fit(teacher_features, 12, basis="random-orthogonal",
                                        generator=torch.Generator().manual_seed(3))
    system = make()
    assert torch.allclose(system.basis @ system.basis.T, torch.eye(12), atol=1e-5)
    assert torch.equal(system.basis, make().basis)
    pca = CoordinateSystem.fit(teacher_features, 12)
    assert system.explained.sum() < pca.explained.sum(), "PCA captures the most variance with 12 rows"


def test_elsh_codes_are_balanced_hashes():
    targets = torch.randn(50, 16, generator=torch.Generator().manual_seed(0))
    planes = random_planes(128, 16, torch.Generator().manual_seed(1))
    offsets, codes = lsh_codes(targets, planes)
    assert codes.shape == (50, 128) and set(codes.unique().tolist()) <= {0.0, 1.0}
    assert torch.allclose(codes.mean(0), torch.full((128,), 0.5), atol=0.03), "median offsets split each bit in half"
    assert torch.equal(codes, ((targets @ planes.T + offsets) > 0).float())


def test_projector_mask_and_classifier_fold_into_one_layer():
    torch.manual_seed(0)
    head = CoordinateHead(torch.nn.Linear(32, 12), torch.nn.Linear(12, 5))
    with torch.no_grad():
        head.mask.uniform_(0.2, 2.0)
        head.selected[[1, 4, 7]] = 0.0
    features = torch.randn(20, 32)
    assert torch.allclose(head(features), head.folded()(features), atol=1e-5)


def test_ridge_projector_recovers_a_linear_map():
    features = torch.randn(200, 8)
    truth = torch.randn(8, 3)
    layer = ridge_projector(features, features @ truth + 0.5, ridge=1e-6)
    assert torch.allclose(layer.weight.T, truth, atol=1e-3) and torch.allclose(layer.bias, torch.full((3,), 0.5), atol=1e-3)


class _Stub(TCS):
    """TCS with only what after_step needs (no context)."""

    def __init__(self, **schedule):
        self.selection = True
        self.prune_start, self.prune_every = schedule["prune_start"], schedule["prune_every"]
        self.prune_fraction, self.min_components = schedule["prune_fraction"], schedule["min_components"]


def test_feature_selection_prunes_the_least_relevant_on_schedule():
    head = CoordinateHead(torch.nn.Linear(4, 10), torch.nn.Linear(10, 3))
    head.relevance.copy_(torch.arange(10, dtype=torch.float32))  # coordinate 0 least relevant
    method = _Stub(prune_start=2, prune_every=3, prune_fraction=0.3, min_components=4)
    counts = []
    for step in range(12):
        method.after_step(head, step)
        counts.append(int(head.selected.sum()))
    # Prunes at steps 2, 5, 8, 11: 10 -> 7 -> 5 -> 4 (floor), then never below min_components.
    assert counts == [10, 10, 7, 7, 7, 5, 5, 5, 4, 4, 4, 4]
    assert head.selected.nonzero().flatten().tolist() == [6, 7, 8, 9], "the most relevant survive"


@pytest.mark.parametrize(("spec", "init"), [("conv4-16", "scratch"), ("resnet12", "scratch"),
                                            ("torchvision:mobilenet_v2", "pretrained"), ("torchvision:resnet18", "scratch"),
                                            ("torchvision:efficientnet_b0", "scratch")])
@pytest.mark.parametrize("layers", ["head", "last", "last-2", "last-4", "all"])
def test_student_split_composes_to_the_student(spec, init, layers):
    torch.manual_seed(0)
    model = build_student(spec, init, image_size=32).model.eval()
    frozen, trainable = split_student(model, layers)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(trainable(frozen(x)), model(x), atol=1e-5)
    trainable_count = sum(p.numel() for p in trainable.parameters())
    if layers.startswith("last"):
        n = 1 if layers == "last" else int(layers[5:])
        _, blocks, _ = student_blocks(model)
        assert sum(p.numel() for b in blocks[-n:] for p in b.parameters()) <= trainable_count <= sum(p.numel() for p in model.parameters())


def test_mobilenet_blocks_are_its_inverted_residuals_and_final_conv():
    stem, blocks, _ = student_blocks(build_student("torchvision:mobilenet_v2").model)
    assert len(blocks) == 18 and type(blocks[0]).__name__ == "InvertedResidual" and type(blocks[-1]).__name__ == "Conv2dNormActivation"
    with pytest.raises(TcsFewshotError, match="has 18 blocks; use last-1 .. last-18"):
        split_student(build_student("torchvision:mobilenet_v2").model, "last-19")


def test_last_stage_needs_a_known_architecture():
    with pytest.raises(TcsFewshotError, match="use 'head' or 'all'"):
        split_student(torch.nn.Linear(2, 2), "last")
    with pytest.raises(TcsFewshotError, match="unknown train_layers"):
        split_student(torch.nn.Linear(2, 2), "middle")
    with pytest.raises(TcsFewshotError, match="unknown train_layers 'last-0'"):
        split_student(torch.nn.Linear(2, 2), "last-0")
