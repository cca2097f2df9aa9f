"""``tcs-fewshot distill``: distil a student on a benchmark's base split (TCS and the baselines)."""

from __future__ import annotations

import click

from tcs_fewshot.cli.options import (
    benchmark_option,
    device_option,
    image_options,
    root_option,
    scheme_option,
    seed_option,
    setting,
    split_file_option,
    student_option,
    student_weights_option,
    teacher_option,
    teacher_weights_option,
)
from tcs_fewshot.cli.output import console


@click.command()
@benchmark_option("A benchmark from 'tcs-fewshot benchmarks'.")
@root_option("Where the benchmark's files are.")
@scheme_option
@split_file_option("With --benchmark folder: JSON {split: [class, ...]}.")
@teacher_option("Teacher spec (see 'run --help').")
@teacher_weights_option
@device_option("Where the teacher and the student run.")
@student_option("torchvision:<name>, timm:<name>, conv4, conv4-<channels> or resnet12.")
@click.option("--init", type=click.Choice(["pretrained", "scratch"]), default=None,
              help="pretrained (default where the student has weights) or scratch (seeded by --seed).")
@student_weights_option("A local weights file for a pretrained student.")
@click.option("--image-size", type=click.IntRange(min=8), default=None,
              help="Student input side in px (default 64 for the default student, else 84).")
@click.option("--objective", type=click.Choice(["tcs", "ce", "kd", "fitnets"]), default="tcs", show_default=True,
              help="tcs: mimic the teacher's PCA coordinates; ce: base-class cross-entropy; kd: logits of the teacher's "
                   "base-class probe; fitnets: regress the teacher's features. All on one loop.")
@click.option("--online", is_flag=True, help="kd: run the teacher on every batch (the usual KD, and the cost reference).")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Passes over every image view (default 6).")
@click.option("--train-layers", default=None, help="all (default), last-N (the last N blocks) or head.")
@click.option("--set", "overrides", multiple=True, callback=lambda _c, _p, values: [setting(v) for v in values],
              metavar="KEY=VALUE", help="Any other distillation setting, e.g. --set components=128 --set views=2 "
                                        "(see DistillSettings in tcs_fewshot.methods.distill).")
@seed_option("Seeds the student's initialisation (scratch) and the shuffling.")
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="The student checkpoint to write (.pt).")
@image_options
def distill(benchmark, root, scheme, split_file, teacher, teacher_weights, device, student, init, student_weights,
            image_size, objective, online, epochs, train_layers, overrides, seed, out, background, max_image_pixels) -> None:
    """Distil a student on a benchmark's base split (TCS, or the CE, KD and FitNets baselines).

    Every objective shares the images, fixed augmented views, epochs, optimiser, seed and
    train_layers. The teacher runs once per image (cached), except kd --online. The checkpoint
    records every setting and the loss terms and validation score of every epoch; 'run
    --student-checkpoint' starts student methods from it.

    \b
    Example: tcs-fewshot distill --objective tcs --out students/emoji-tcs.pt
    Baseline: tcs-fewshot distill --objective kd --out students/emoji-kd.pt
    Settings: tcs-fewshot distill --set components=128 --set ce_weight=0.5 --out s.pt
    2 processes: torchrun --nproc_per_node 2 -m tcs_fewshot.cli distill --out students/emoji-tcs.pt
    """
    from tcs_fewshot.data.images import ImageOptions
    from tcs_fewshot.models.teachers import resolve_device
    from tcs_fewshot.runs.distilled import distill_benchmark, settings_for

    options = {key: value for key, value in {"epochs": epochs, "train_layers": train_layers, "online": online or None,
                                              "seed": seed}.items() if value is not None}
    settings = settings_for(objective, {**options, **dict(overrides)}, resolve_device(device))

    def show_epoch(epoch: int, epochs: int, record: dict) -> None:
        console.print(f"epoch {epoch}/{epochs}: " + ", ".join(f"{name} {value:.4f}" for name, value in record.items() if name != "epoch"))

    result = distill_benchmark(benchmark, out, student, root=root, scheme=scheme, split_file=split_file, teacher_spec=teacher,
                               teacher_weights=teacher_weights, init=init, student_weights=student_weights,
                               image_size=image_size, settings=settings, progress=show_epoch,
                               images=ImageOptions.parse(background, max_image_pixels))
    console.print(f"student checkpoint {out} ({result.student.name}, {result.student.image_size} px, "
                  f"{result.teacher_forward_passes} teacher passes); evaluate it: tcs-fewshot run "
                  f"--benchmark {benchmark} --student-checkpoint {out} --methods ncm,student-ncm,tcs,kd,finetune")
