"""The tailored coordinate system: a basis of the teacher's feature space fitted on a task's images.

    system = CoordinateSystem.fit(teacher_features, components=32, scale="whiten")  # (N, D) float
    targets = system.coordinates(teacher_features)                                 # (N, k)

The paper (Zhou, Zhu & Wu, AAAI 2025) fits PCA on the teacher features of the target data and
leaves the rest open; our choices, each a parameter:

* centring on the mean of the fitting features (PCA's own);
* ``components``: at most ``k`` components, fewer when the features' rank is lower (``n - 1``
  for ``n`` fitting rows: with 1-2 shots the rank, not ``k``, decides; reported in ``rank``),
  and fewer still when ``explained_variance`` is reached first;
* ``scale``: ``whiten`` divides each coordinate by its standard deviation (every direction
  weighs the same in the mimicking loss: best in our prototype), ``spectrum`` divides all by
  the first one's (relative variances kept), ``raw`` leaves them (the first components dominate);
* ``basis``: ``pca``, or ``random-orthogonal`` (the paper's ablation: same centring and scale
  rule, a random orthonormal basis of the same size).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tcs_fewshot.errors import TcsFewshotError

SCALES = ("whiten", "spectrum", "raw")
BASES = ("pca", "random-orthogonal")


@dataclass(frozen=True)
class CoordinateSystem:
    """An affine coordinate system of the teacher's feature space.

    Attributes:
        mean: ``(D,)`` centre (the fitting features' mean).
        basis: ``(k, D)`` orthonormal rows.
        scale: ``(k,)`` divisor of each coordinate.
        explained: ``(k,)`` fraction of the fitting features' variance along each row.
        rank: Numerical rank of the centred fitting features (an upper bound on useful ``k``).
    """

    mean: torch.Tensor
    basis: torch.Tensor
    scale: torch.Tensor
    explained: torch.Tensor
    rank: int

    @property
    def components(self) -> int:
        return int(self.basis.shape[0])

    @classmethod
    def fit(cls, features: torch.Tensor, components: int = 32, explained_variance: float = 1.0,
            scale: str = "whiten", basis: str = "pca", generator: torch.Generator | None = None) -> CoordinateSystem:
        """Fit on ``(N, D)`` teacher features (N >= 2).

        Raises:
            TcsFewshotError: fewer than 2 rows, no variance, or an unknown ``scale``/``basis``.
        """
        if scale not in SCALES:
            raise TcsFewshotError(f"unknown coordinate scale '{scale}'; choose one of {', '.join(SCALES)}")
        if basis not in BASES:
            raise TcsFewshotError(f"unknown basis '{basis}'; choose one of {', '.join(BASES)}")
        if components < 1 or not 0 < explained_variance <= 1:
            raise TcsFewshotError(f"components must be >= 1 and explained_variance in (0, 1]; got {components}, {explained_variance}")
        features = torch.as_tensor(features, dtype=torch.float64)
        if features.ndim != 2 or features.shape[0] < 2:
            raise TcsFewshotError(f"a coordinate system needs (N >= 2, D) features; got {tuple(features.shape)}")
        mean = features.mean(0)
        centred = features - mean
        _, singular, right = torch.linalg.svd(centred, full_matrices=False)
        tolerance = singular.max() * max(centred.shape) * torch.finfo(torch.float64).eps
        rank = int((singular > tolerance).sum())
        if rank == 0:
            raise TcsFewshotError("the teacher features of this task have no variance; a coordinate system needs distinct images")
        variance = singular[:rank] ** 2
        ratios = variance / variance.sum()
        enough = int(torch.searchsorted(ratios.cumsum(0), torch.tensor(explained_variance - 1e-12, dtype=torch.float64))) + 1
        k = max(1, min(components, rank, enough))
        if basis == "pca":
            rows, spread = right[:k], singular[:k] / (features.shape[0] - 1) ** 0.5
        else:
            rows = _random_orthonormal(k, features.shape[1], generator)
            spread = (centred @ rows.T).std(0).clamp_min(1e-12)
        divisor = {"whiten": spread, "spectrum": spread[:1].expand(k), "raw": torch.ones(k, dtype=torch.float64)}[scale]
        explained = ((centred @ rows.T) ** 2).sum(0) / (singular**2).sum()
        return cls(mean.float(), rows.float(), divisor.float().clamp_min(1e-12), explained.float(), rank)

    def coordinates(self, features: torch.Tensor) -> torch.Tensor:
        """``(N, k)`` scaled coordinates of ``(N, D)`` features."""
        return ((torch.as_tensor(features, dtype=torch.float32) - self.mean) @ self.basis.T) / self.scale


def _random_orthonormal(k: int, dim: int, generator: torch.Generator | None) -> torch.Tensor:
    """``(k, dim)`` orthonormal rows, uniformly random (QR of a Gaussian matrix, signs fixed)."""
    gaussian = torch.randn(dim, k, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(gaussian)
    return (q * torch.sign(torch.diagonal(r))).T


def random_planes(bits: int, dim: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``(bits, dim)`` random unit hyperplane normals for LSH hashing."""
    planes = torch.randn(bits, dim, generator=generator)
    return planes / planes.norm(dim=1, keepdim=True)


def lsh_codes(targets: torch.Tensor, planes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Hashes of ``(N, dim)`` targets by ``(bits, dim)`` planes for the LSH loss (Wang, Ge & Wu 2021).

    Returns ``(offsets (bits,), codes (N, bits) in {0, 1})``. Offsets are minus the median
    projection, so that each bit splits the targets in half (balanced codes).
    """
    projections = targets @ planes.T
    offsets = -projections.median(0).values
    return offsets, (projections + offsets > 0).float()
