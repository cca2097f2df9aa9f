"""The run manifest: what a run was, so its numbers can be reproduced and trusted.

``manifest.json`` in the run directory holds the config, the task-set checksum, the
dataset fingerprint, and one entry per session (start time, package versions, git
revision, command line). A re-run into the same directory must have the same config
and tasks, or it is refused; methods may be added.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from collections.abc import Mapping
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from tcs_fewshot.errors import RunDirectoryError

FORMAT = "tcs-fewshot/run"
VERSION = 1
PACKAGES = ("tcs-fewshot", "numpy", "scipy", "pandas", "scikit-learn", "torch", "torchvision", "timm", "learn2learn")


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that can change a result (``None`` if absent)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def git_revision() -> str | None:
    """The toolkit's git revision when it runs from a checkout, else ``None``."""
    source = Path(__file__).resolve().parents[2]
    if not (source / ".git").exists():
        return None
    try:
        result = subprocess.run(
            # --no-optional-locks: never take the index lock of the user's checkout.
            ["git", "--no-optional-locks", "-C", str(source), "describe", "--always", "--dirty", "--abbrev=40"],
            capture_output=True, text=True, timeout=10, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None


def _session() -> dict[str, Any]:
    return {
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": package_versions(),
        "git_revision": git_revision(),
        "platform": platform.platform(),
        "argv": sys.argv,
    }


def open_manifest(run_dir: Path, identity: Mapping[str, Any], methods: list[str],
                  session: Mapping[str, Any] | None = None,
                  method_settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Create or extend ``run_dir/manifest.json``; refuse a run directory of another run.

    A damaged or foreign manifest is refused and left as it is.

    Args:
        identity: What must match on resume: config, tasks checksum, dataset fingerprint.
        methods: Method names of this session (added to those already recorded).
        session: Facts about this session only (e.g. its executor), recorded beside its
            versions and command line; not part of the identity.
        method_settings: name -> settings of that method alone (``method_settings`` in the
            manifest): a method already recorded must match, a new one is added.
    """
    path = run_dir / "manifest.json"
    identity = json.loads(json.dumps(identity, default=str))
    if path.exists():
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise RunDirectoryError(f"'{path}' is damaged ({error}); move the run directory away or use another --out") from None
        _check_manifest(manifest, path)
        for key, value in identity.items():
            if manifest.get(key) != value:
                what, stored, now = _first_difference(key, manifest.get(key), value)
                raise RunDirectoryError(
                    f"run directory '{run_dir}' holds another run ({what} was {stored}, now {now}); "
                    "use another --out to start a new run"
                )
        stored_settings = manifest.setdefault("method_settings", {})
        for name, settings in json.loads(json.dumps(method_settings or {}, default=str)).items():
            if name in stored_settings and stored_settings[name] != settings:
                what, stored, now = _first_difference(name, stored_settings[name], settings)
                raise RunDirectoryError(
                    f"method '{name}' of run '{run_dir}' was evaluated with other settings ({what} was {stored}, "
                    f"now {now}); use another --out, or evaluate it under another name"
                )
            stored_settings[name] = settings
        manifest["methods"] = list(dict.fromkeys([*manifest.get("methods", []), *methods]))
        manifest.setdefault("sessions", []).append({**_session(), **(session or {})})
    else:
        manifest = {"format": FORMAT, "version": VERSION, **identity, "methods": methods,
                    "method_settings": json.loads(json.dumps(method_settings or {}, default=str)),
                    "sessions": [{**_session(), **(session or {})}]}
    write_json_atomically(path, manifest)
    return manifest


def _check_manifest(manifest: Any, path: Path) -> None:
    """Refuse a manifest that is not ours, or whose lists were damaged by hand."""
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise RunDirectoryError(f"'{path}' is not a tcs-fewshot run manifest; use another --out")
    for key in ("methods", "sessions"):
        if not isinstance(manifest.get(key, []), list):
            raise RunDirectoryError(f"'{path}' is damaged ('{key}' is not a list); move the run directory away "
                                    "or use another --out")


IDENTITY_KEYS = ("config", "spec", "n_tasks", "dataset", "tasks_checksum")


def manifest_identity(manifest: Mapping[str, Any]) -> str:
    """sha256 of what identifies a run; the records store keeps it to refuse another run's rows."""
    identity = {key: manifest.get(key) for key in IDENTITY_KEYS}
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def _first_difference(key: str, stored: Any, now: Any) -> tuple[str, str, str]:
    """The first (dotted key, stored, now) at which two JSON values differ."""
    if isinstance(stored, dict) and isinstance(now, dict):
        for sub_key in sorted(set(stored) | set(now)):
            if stored.get(sub_key) != now.get(sub_key):
                return _first_difference(f"{key}.{sub_key}", stored.get(sub_key), now.get(sub_key))
    return key, json.dumps(stored, default=str)[:60], json.dumps(now, default=str)[:60]


def write_json_atomically(path: Path, document: Any) -> None:
    """Write JSON so that a crash leaves either the old or the new file, never half of one."""
    temporary = path.with_name(path.name + ".partial")
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(document, handle, indent=2, sort_keys=True, default=str)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def read_manifest(run_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(run_dir) / "manifest.json"
    if not path.is_file():
        raise RunDirectoryError(f"'{run_dir}' is not a run directory (no manifest.json); pass the --out of a run")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise RunDirectoryError(f"'{path}' is damaged ({error})") from None
    _check_manifest(manifest, path)
    return manifest
