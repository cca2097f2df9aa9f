"""Run configurations as TOML files: ``tcs-fewshot run --config FILE.toml``.

A config file holds the same keys as the options of ``tcs-fewshot run`` (``split-file`` or
``split_file`` alike)::

    benchmark = "emoji"
    shots = [1, 5]              # a list of shots or ways is a sweep: one run per setting
    methods = ["ncm", "logreg"]
    out = "runs/emoji-sweep"

Options given on the command line override the file. Every run directory saves the
effective config as ``config.toml``, so ``tcs-fewshot run --config runs/x/config.toml``
reruns (and so resumes) exactly that run. Paths in a config file are relative to the
directory the command runs from, as on the command line.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import MISSING, asdict, fields
from pathlib import Path
from typing import Any

from tcs_fewshot.errors import TcsFewshotError
from tcs_fewshot.runs.experiment import RunConfig

SWEEP_KEYS = ("ways", "shots")
# The keys that define the tasks; a tasks file fixes them.
SHAPE_KEYS = ("protocol", "split", "ways", "shots", "queries", "tasks", "seed")
CHOICES = {"protocol": ("episodic", "pfsl"), "ci": ("normal", "t"), "device": ("auto", "cpu", "cuda"),
           "student_init": ("pretrained", "scratch", "checkpoint", None)}
MINIMUM = {"ways": 2, "shots": 1, "queries": 1, "tasks": 1, "seed": 0, "max_image_pixels": 1}
# Options of ``run`` that are not RunConfig fields: where the run goes, and how this session behaves.
RUN_KEYS = {"out": "str | None", "fail_fast": "bool", "no_progress": "bool", "skip_check": "bool"}
# Session behaviour, accepted in a file but not saved with a run: it does not define what the run is.
SESSION_KEYS = ("fail_fast", "no_progress", "skip_check")


def _kinds() -> dict[str, str]:
    """Key -> annotation text, for RunConfig's fields (in order) and the run options."""
    def text(kind: Any) -> str:  # annotations are text under ``from __future__ import annotations``
        return kind if isinstance(kind, str) else getattr(kind, "__name__", str(kind))

    return {**{field.name: text(field.type) for field in fields(RunConfig)}, **RUN_KEYS}


def valid_keys() -> tuple[str, ...]:
    """Every key a config file may hold, in the order ``config.toml`` writes them."""
    return tuple(_kinds())


def defaults() -> dict[str, Any]:
    """The value of every key when neither the file nor the command line gives it."""
    values: dict[str, Any] = {}
    for field in fields(RunConfig):
        if field.default is not MISSING:
            values[field.name] = field.default
        elif field.default_factory is not MISSING:
            values[field.name] = field.default_factory()
    values.update(out=None, fail_fast=False, no_progress=False, skip_check=False)
    for key in SWEEP_KEYS:
        values[key] = (values[key],)
    return values


def _shown(value: Any) -> str:
    return json.dumps(value, default=str)[:60]


def _is_int(value: Any, key: str) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)
            and MINIMUM.get(key, -2**63) <= value < 2**63)


def check_value(key: str, value: Any, where: str = "config") -> Any:
    """``value`` for ``key`` checked and normalised: ways/shots become a tuple, methods a tuple.

    Raises:
        TcsFewshotError: one line naming the key, the type it needs, and what it got.
    """
    kind = _kinds()[key]
    at_least = f"an integer of at least {MINIMUM.get(key, 0)}" if key in MINIMUM else "an integer"
    if key in SWEEP_KEYS:
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        if items and all(_is_int(item, key) for item in items):
            return tuple(dict.fromkeys(items))
        expected = f"{at_least} or a list of them, e.g. [1, 5]"
    elif key in CHOICES:
        if value in CHOICES[key]:
            return value
        expected = f"one of: {', '.join(str(choice) for choice in CHOICES[key] if choice is not None)}"
    elif kind.startswith("tuple[str"):
        items = value.split(",") if isinstance(value, str) else value
        if isinstance(items, (list, tuple)) and all(isinstance(item, str) for item in items):
            names = tuple(item.strip() for item in items if item.strip())
            if names:
                return names
        expected = 'a non-empty list of names, e.g. ["ncm", "logreg"]'
    elif kind.startswith("int"):
        if _is_int(value, key) or (value is None and "None" in kind):
            return value
        expected = at_least
    elif kind.startswith("dict"):
        if isinstance(value, Mapping):
            return dict(value)
        expected = "a table, e.g. {steps = 100}"
    elif kind.startswith("bool"):
        if isinstance(value, bool):
            return value
        expected = "true or false"
    elif kind.startswith("float"):
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return value
        expected = "a number"
    else:
        if isinstance(value, (str, os.PathLike)) or (value is None and "None" in kind):
            text = value if value is None else str(value)
            if text is not None and ("\x00" in text or any("\ud800" <= char <= "\udfff" for char in text)):
                # config.toml could not save it, and no path or name holds NUL
                raise TcsFewshotError(f"{where}: '{key}' must be UTF-8 text without NUL characters, got {_shown(text)}")
            if key == "teacher" and text is not None:
                from tcs_fewshot.models.teacher_spec import split_spec

                split_spec(text)  # bad teacher options fail here, before the data loads
            return text
        expected = "a string"
    raise TcsFewshotError(f"{where}: '{key}' must be {expected}, got {_shown(value)}")


def check_values(values: Mapping[str, Any], where: str = "config") -> dict[str, Any]:
    """Check every key and value of ``values`` (dashes in keys read as underscores)."""
    known = _kinds()
    checked: dict[str, Any] = {}
    for raw_key, value in values.items():
        key = str(raw_key).replace("-", "_")
        if key not in known:
            raise TcsFewshotError(f"{where}: unknown key '{raw_key}'; valid keys: {', '.join(known)}")
        checked[key] = check_value(key, value, where)
    return checked


def toml_module() -> Any:
    """The TOML parser: ``tomllib`` (Python >= 3.11), else ``tomli`` when installed."""
    try:
        import tomllib  # Python >= 3.11
    except ModuleNotFoundError:
        try:
            import tomli as tomllib  # the same parser, on Python 3.10
        except ModuleNotFoundError:
            raise TcsFewshotError("reading a TOML config on Python 3.10 needs the tomli package: pip install tomli") from None
    return tomllib


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """The checked keys of a TOML config file (only those it gives).

    Raises:
        TcsFewshotError: the file is missing, is not TOML, or has an unknown key or a wrong type.
    """
    tomllib = toml_module()
    path = Path(path)
    where = f"config file '{path}'"
    if not path.is_file():
        raise TcsFewshotError(f"{where} does not exist")
    try:
        document = tomllib.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise TcsFewshotError(f"{where} is not UTF-8 text; save it as a UTF-8 TOML file") from None
    except tomllib.TOMLDecodeError as error:
        raise TcsFewshotError(f"{where} is not valid TOML: {' '.join(str(error).split())}") from None
    return check_values(document, where)


def effective_config(file_values: Mapping[str, Any] | None = None, given: Mapping[str, Any] | None = None,
                     source: str = "the config file") -> dict[str, Any]:
    """Every key's value: the defaults, overridden by the file, overridden by ``given``.

    Args:
        file_values: Keys from a config file (:func:`load_config_file`).
        given: Keys given explicitly, e.g. on the command line.
        source: How errors name the file.

    Raises:
        TcsFewshotError: a bad key or value, or a tasks file with task-shape keys beside it.
    """
    from_file = check_values(file_values or {}, source)
    from_options = check_values(given or {}, "options")
    values = {**defaults(), **from_file, **from_options}
    if values["tasks_file"]:
        fixer = "--tasks-file" if "tasks_file" in from_options else f"tasks_file in {source}"
        for key in SHAPE_KEYS:
            if key in from_options:
                raise TcsFewshotError(f"{fixer} fixes the tasks; drop --{key}")
            if key in from_file:
                raise TcsFewshotError(f"{fixer} fixes the tasks; drop '{key}' from {source}")
    return values


def run_config(values: Mapping[str, Any]) -> RunConfig:
    """The RunConfig of effective ``values`` (of a sweep: its first setting)."""
    chosen = {field.name: values[field.name] for field in fields(RunConfig) if field.name in values}
    for key in SWEEP_KEYS:
        if isinstance(chosen.get(key), (list, tuple)):
            chosen[key] = chosen[key][0]
    return RunConfig(**chosen)


def config_values(config: RunConfig, out: str | os.PathLike | None = None, shots: tuple[int, ...] | None = None,
                  ways: tuple[int, ...] | None = None) -> dict[str, Any]:
    """What ``config.toml`` saves: the config's keys (and a sweep's lists) and ``out``.

    A tasks file fixes the task shape, so the shape keys are left out beside it.
    """
    values: dict[str, Any] = {**asdict(config), "out": None if out is None else str(out)}
    if shots is not None:
        values["shots"] = tuple(shots)
    if ways is not None:
        values["ways"] = tuple(ways)
    if values.get("tasks_file"):
        values = {key: value for key, value in values.items() if key not in SHAPE_KEYS}
    return values


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, Mapping):  # an inline table; quoted keys take any text
        return "{" + ", ".join(f"{json.dumps(str(key), ensure_ascii=False)} = {_toml_value(item)}"
                               for key, item in value.items() if item is not None) + "}"
    # A JSON string with non-ASCII kept is a TOML basic string (same escapes).
    return json.dumps(str(value), ensure_ascii=False)


def config_toml(values: Mapping[str, Any]) -> str:
    """TOML text of ``values``: known keys in order, ``None`` left out, one-element sweeps as scalars."""
    lines = [
        "# tcs-fewshot run config. `tcs-fewshot run --config <this file>` reruns it, resuming finished tasks.",
        "# Paths are relative to the directory the command runs from.",
    ]
    for key in valid_keys():
        value = values.get(key)
        if value is None or key in SESSION_KEYS:
            continue
        if key in SWEEP_KEYS and isinstance(value, (list, tuple)) and len(value) == 1:
            value = value[0]
        lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def save_config(values: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write ``values`` as TOML to ``path`` atomically (a crash leaves the old file or the new)."""
    path = Path(path)
    temporary = path.with_name(path.name + ".partial")
    temporary.write_text(config_toml(values), encoding="utf-8")
    os.replace(temporary, path)
    return path
