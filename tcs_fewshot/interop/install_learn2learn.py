"""Build and install learn2learn 0.2.0 for the running interpreter.

learn2learn 0.2.0 is published only as an sdist whose generated C files do not compile on
Python 3.11 (``longintrepr.h``; upstream issue #413, still open). This downloads the sdist,
regenerates ``learn2learn/data/*.c`` with Cython 3 and installs it ``--no-deps`` (its declared
dependencies pull gsutil and cvxpy and downgrade numpy). First install the extra that brings
its runtime and build dependencies, then run this::

    pip install -e '.[learn2learn]'
    python -m tcs_fewshot.interop.install_learn2learn [--force]
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tarfile
import tempfile
from importlib import metadata
from pathlib import Path

VERSION = "0.2.0"


def _run(step: str, *args: str) -> None:
    print(f"{step}...", flush=True)
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True)
    if result.returncode != 0:
        log = Path(tempfile.gettempdir()) / "learn2learn-build.log"
        log.write_text(result.stdout + result.stderr, encoding="utf-8")
        lines = [line.strip() for line in (result.stdout + result.stderr).splitlines() if line.strip()]
        generic = ("subprocess-exited-with-error", "metadata-generation-failed", "failed-wheel-build", "see above")
        errors = [line for line in lines if "error" in line.lower() and not any(g in line.lower() for g in generic)]
        reason = errors[0] if errors else lines[-1] if lines else "no output"
        raise SystemExit(f"error: {step} failed (exit {result.returncode}): {reason} (full output: {log})")


def _installed_version() -> str | None:
    """The version of learn2learn that imports in this interpreter (in a child: gym is noisy)."""
    code = "import learn2learn; print(learn2learn.__version__)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return result.stdout.strip().splitlines()[-1] if result.returncode == 0 and result.stdout.strip() else None


def _has_build_deps() -> bool:
    """Cython 3, and setuptools that builds wheels (bdist_wheel is built in from 70.1, else needs wheel)."""
    try:
        cython = int(metadata.version("cython").split(".")[0])
        setuptools = tuple(int(part) for part in metadata.version("setuptools").split(".")[:2])
    except (metadata.PackageNotFoundError, ValueError):
        return False
    return cython >= 3 and (setuptools >= (70, 1) or importlib.util.find_spec("wheel") is not None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tcs_fewshot.interop.install_learn2learn", description=__doc__.split("\n")[0])
    parser.add_argument("--force", action="store_true", help="rebuild even if learn2learn 0.2.0 already imports")
    force = parser.parse_args(argv).force
    if not force and _installed_version() == VERSION:
        print(f"learn2learn {VERSION} is already installed for {sys.executable}; use --force to rebuild")
        return 0
    if not _has_build_deps():
        raise SystemExit("error: building learn2learn needs Cython>=3 and setuptools>=70.1; first run: pip install -e '.[learn2learn]' 'setuptools>=70.1'")
    with tempfile.TemporaryDirectory(prefix="learn2learn-build-") as temp:
        _run(f"downloading the learn2learn {VERSION} sdist", "-m", "pip", "download", "-q", "--no-deps",
             "--no-binary", ":all:", f"learn2learn=={VERSION}", "-d", temp)
        print("unpacking...", flush=True)
        with tarfile.open(next(Path(temp).glob("learn2learn-*.tar.gz"))) as archive:
            archive.extractall(temp, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
        source = Path(temp) / f"learn2learn-{VERSION}"
        for generated in (source / "learn2learn" / "data").glob("*.c"):
            generated.unlink()
        sources = sorted(str(path) for path in (source / "learn2learn" / "data").glob("*.pyx"))
        _run("regenerating learn2learn/data/*.c with Cython 3", "-m", "cython", "-3", *sources)
        extra = ["--force-reinstall"] if force else []
        _run("building and installing (about 35 s)", "-m", "pip", "install", "-q", "--no-deps",
             "--no-build-isolation", *extra, str(source))
    if _installed_version() != VERSION:
        raise SystemExit(f"error: learn2learn {VERSION} was installed but does not import; run: python -c 'import learn2learn'")
    print(f"learn2learn {VERSION} installed for {sys.executable}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
