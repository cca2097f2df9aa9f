"""How a student is distilled on a split: :class:`DistillSettings`, every field recorded in the checkpoint."""

from __future__ import annotations

from dataclasses import dataclass

from tcs_fewshot.errors import TcsFewshotError
from tcs_fewshot.methods.distill_objectives import OBJECTIVES


@dataclass(frozen=True)
class DistillSettings:
    """How a student is distilled on a split (all recorded in the checkpoint).

    Attributes:
        objective: ``tcs``, ``ce``, ``kd`` or ``fitnets`` (see :mod:`distill_objectives`).
        online: ``kd`` only: run the teacher on every batch, as KD is usually implemented (the
            cost reference), instead of its cached features.
        split: The split whose images and labels train the student (never an evaluated one).
        views: Augmented views per image the student trains on (view ids ``1..views``, plus
            the image itself); fixed per (image, view), so every objective sees the same pixels.
        target_views: ``plain``: every view's target is the teacher on the image itself (one
            teacher pass per image); ``matched``: the teacher on the same view (one per view).
        epochs: Passes over all image views.
        batch_size: Image views per step.
        backbone_lr, head_lr: Adam's learning rates of the student and of the objective's head,
            decayed to zero by a cosine schedule.
        weight_decay: Adam's L2 penalty.
        train_layers: Which student layers train (``all``, ``last-N``, ``head``; see
            :func:`split_student`); the rest is frozen, batch norm included.
        components, scale, basis: ``tcs``'s coordinate system (see :mod:`coordinates`).
        mimic_weight, ce_weight: Weights of the mimicking (or KD) term and of cross-entropy;
            ``ce`` always uses cross-entropy with weight 1.
        temperature, teacher_scale: ``kd``'s temperature and its probe's logit scale.
        head_init: How the regression heads of ``tcs`` (projector) and ``fitnets`` (regressor)
            start: ``ridge`` (default: the least-squares map from the initial student's
            standardised features of every training view to the targets, ridge 0.01 per row, as
            per-task TCS starts its projector) or ``random`` (PyTorch's init). A random head over
            many small targets pushes the student's features into its null space; on the emoji
            validation split the ridge start took the default TCS student from 60.4 to 61.4
            (``benchmarks/results/distill_val_head_init_emoji.md``). ``ce``/``kd`` heads are
            classifiers and start random either way.
        selection: ``tcs``: prune the coordinates least relevant to the base classes after each
            epoch from ``prune_start`` on (by ``prune_fraction``, keeping ``min_components``);
            needs ``ce_weight > 0``, whose gradient measures relevance.
        val_split, val_tasks, val_shots, val_queries: Split scored before training and after
            every epoch (student NCM on 5-way tasks, fewer ways if the split has fewer classes,
            on the plain images; ``None``/0 tasks: off). The test split never chooses anything.
        keep: ``last`` epoch's weights, or ``best-val`` (the epoch with the best validation score).
        seed: Seeds the shuffling (the student's own initialisation is seeded by its builder).
        device: ``cpu`` or ``cuda``; ``amp`` uses autocast (CUDA only).
    """

    objective: str = "tcs"
    online: bool = False
    split: str = "train"
    views: int = 1
    target_views: str = "plain"
    epochs: int = 6
    batch_size: int = 64
    backbone_lr: float = 1e-4
    head_lr: float = 1e-3
    weight_decay: float = 0.0
    train_layers: str = "all"
    components: int = 64
    scale: str = "spectrum"
    basis: str = "pca"
    mimic_weight: float = 1.0
    ce_weight: float = 1.0
    temperature: float = 4.0
    teacher_scale: float = 10.0
    head_init: str = "ridge"
    selection: bool = False
    prune_start: int = 2
    prune_fraction: float = 0.2
    min_components: int = 8
    val_split: str | None = "val"
    val_tasks: int = 100
    val_shots: int = 5
    val_queries: int = 15
    keep: str = "last"
    seed: int = 0
    device: str = "cpu"
    amp: bool = False

    def __post_init__(self) -> None:
        choices = {"objective": OBJECTIVES, "target_views": TARGET_VIEWS, "keep": KEEP, "head_init": HEAD_INITS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise TcsFewshotError(f"unknown {name} '{getattr(self, name)}'; choose one of {', '.join(allowed)}")
        if self.online and self.objective != "kd":
            raise TcsFewshotError("online applies to the kd objective only (the teacher run on every batch)")
        if self.selection and not (self.objective == "tcs" and self.ce_weight > 0):
            raise TcsFewshotError("selection needs objective 'tcs' with ce_weight > 0 (cross-entropy measures relevance)")
        if self.epochs < 1 or self.batch_size < 1 or self.views < 0:
            raise TcsFewshotError(f"epochs and batch_size must be >= 1 and views >= 0; got {self.epochs}, {self.batch_size}, {self.views}")
        if self.amp and self.device != "cuda":
            raise TcsFewshotError("amp (autocast) is offered on CUDA only; drop --amp or use --device cuda")


TARGET_VIEWS = ("plain", "matched")
KEEP = ("last", "best-val")
HEAD_INITS = ("random", "ridge")
