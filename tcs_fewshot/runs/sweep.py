"""Sweeps over task shapes: one resumable run directory per (ways, shots) setting.

    results = run_sweep(RunConfig(benchmark="digits", tasks=600), shots=[1, 5], ways=[5], out="runs/sweep")

writes ``runs/sweep/5way1shot`` and ``runs/sweep/5way5shot``, each a complete run directory
(records, manifest, tasks, tables and its own ``config.toml``), and the sweep's
``config.toml`` in ``runs/sweep``. A single setting is an ordinary run: ``out`` is the run
directory itself. Re-running a sweep resumes every setting.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from tcs_fewshot.runs.config import config_values, effective_config, load_config_file, run_config, save_config
from tcs_fewshot.data.tasks import TaskSampler, TaskSpec
from tcs_fewshot.errors import RunDirectoryError, TcsFewshotError
from tcs_fewshot.runs.executors import Executor, make_executor
from tcs_fewshot.runs.run_tables import write_run_tables
from tcs_fewshot.runs.experiment import (
    RunConfig,
    RunResult,
    load_index,
    run_experiment,
)

CONFIG_FILE = "config.toml"
# Keys every run of a sweep records in its identity, beside its own ways and shots; a parent
# whose saved config differs in one holds another sweep.
SHARED_KEYS = ("benchmark", "features", "root", "scheme", "split_file", "teacher", "teacher_weights", "protocol",
               "split", "queries", "tasks", "seed")


def setting_name(config: RunConfig) -> str:
    """The directory name of one setting in a sweep: ``5way1shot``, or ``1shot`` under pFSL."""
    return f"{config.shots}shot" if config.protocol == "pfsl" else f"{config.ways}way{config.shots}shot"


def sweep_settings(config: RunConfig, shots: Sequence[int] | None = None,
                   ways: Sequence[int] | None = None) -> list[RunConfig]:
    """One config per (ways, shots) of the cartesian product, ways varying slowest.

    ``None`` keeps the config's own value; repeated values count once.

    Raises:
        TcsFewshotError: a sweep beside a tasks file (it fixes the shape), or several ways under pFSL.
    """
    shots = tuple(dict.fromkeys(shots or (config.shots,)))
    ways = tuple(dict.fromkeys(ways or (config.ways,)))
    if config.tasks_file and len(shots) * len(ways) > 1:
        raise TcsFewshotError("--tasks-file fixes the tasks; a sweep over --shots or --ways needs sampled tasks")
    if config.protocol == "pfsl" and len(ways) > 1:
        raise TcsFewshotError("--ways does not apply to --protocol pfsl (every task has every class); give one value")
    return [replace(config, ways=w, shots=k) for w in ways for k in shots]


def default_sweep_dir(config: RunConfig, shots: Sequence[int], ways: Sequence[int]) -> Path:
    """The parent directory of a sweep: the run directory name with the lists joined by '+'.

    E.g. ``runs/digits-episodic-5way1+5shot15q-seed0-n600`` for shots 1 and 5.
    """
    first = replace(config, shots=shots[0], ways=ways[0])
    single = first.default_run_dir()
    joined = {"shots": "+".join(map(str, shots)), "ways": "+".join(map(str, ways))}
    shape = setting_name(first)
    sweep_shape = setting_name(replace(first, **joined))  # type: ignore[arg-type]  # names only
    head, found, tail = single.name.rpartition(f"-{shape}")
    name = f"{head}-{sweep_shape}{tail}" if found else f"{single.name}-{sweep_shape}"
    return single.with_name(name)


def check_settings(settings: Sequence[RunConfig]) -> None:
    """Check every setting's task shape against the data before any runs, so none fails late."""
    if len(settings) < 2 or settings[0].tasks_file:
        return
    index = load_index(settings[0])
    for setting in settings:
        TaskSampler(index, TaskSpec(protocol=setting.protocol, split=setting.split, ways=setting.ways,
                                    shots=setting.shots, queries=setting.queries, seed=setting.seed))


def _holds_runs(directory: Path) -> bool:
    return directory.is_dir() and any((child / "manifest.json").is_file() for child in directory.iterdir() if child.is_dir())


def _check_out(out: Path, sweep: bool) -> None:
    if sweep and (out / "manifest.json").is_file():
        raise RunDirectoryError(f"'{out}' is the run directory of one setting; a sweep writes one run directory "
                                "per setting under --out: choose another --out")
    if not sweep and not (out / "manifest.json").is_file() and _holds_runs(out):
        raise RunDirectoryError(f"'{out}' holds other run directories (a sweep's, one per setting); pass one of "
                                "them to resume it, or choose another --out")


def _check_parent_config(parent: Path, config: RunConfig) -> None:
    """Refuse, before any work, a sweep parent whose saved config is another run's (tasks, data, ...)."""
    if not (parent / CONFIG_FILE).is_file():
        return
    saved = load_config_file(parent / CONFIG_FILE)
    values = config_values(config)
    for key in SHARED_KEYS:
        value = values.get(key)
        if saved.get(key) != value:
            raise RunDirectoryError(f"'{parent}' holds a sweep of another config ({key} was {saved.get(key)!r}, now "
                                    f"{value!r}); use another --out to start a new sweep")


def run_sweep(
    config: RunConfig,
    shots: Sequence[int] | None = None,
    ways: Sequence[int] | None = None,
    out: str | os.PathLike | None = None,
    *,
    progress: bool = False,
    fail_fast: bool = False,
    on_result: Callable[[RunConfig, RunResult], None] | None = None,
    executor: Executor | None = None,
    skip_check: bool = False,
) -> list[RunResult]:
    """Run every (ways, shots) setting into its own run directory; one setting is a plain run.

    Args:
        config: Everything but the swept shape; its own ``shots``/``ways`` are used when the
            lists are ``None``.
        shots: K values (support items per class) to sweep.
        ways: N values (classes per task) to sweep.
        out: For one setting, its run directory (default ``config.default_run_dir()``); for a
            sweep, the parent of the run directories named by :func:`setting_name` (default
            :func:`default_sweep_dir`).
        progress: Show a progress bar per setting.
        fail_fast: Stop at the first method failure (raises ``MethodFailure``); otherwise a
            setting whose method failed on some tasks keeps its records and the sweep goes on.
        on_result: Called after each setting with its config and result (e.g. to print it).
        executor: Where rows are computed (default this process; see
            :mod:`tcs_fewshot.runs.executors`); not part of any run's identity.
        skip_check: Do not refuse a benchmark whose check fails (see ``run_experiment``).

    Returns:
        One :class:`RunResult` per setting, in sweep order. Each run directory also gets its
        tables and its ``config.toml``; a sweep's parent gets the sweep's ``config.toml``.
    """
    settings = sweep_settings(config, shots, ways)
    shot_values = tuple(dict.fromkeys(setting.shots for setting in settings))
    way_values = tuple(dict.fromkeys(setting.ways for setting in settings))
    sweep = len(settings) > 1
    if sweep:
        parent = Path(out) if out is not None else default_sweep_dir(config, shot_values, way_values)
        run_dirs = [parent / setting_name(setting) for setting in settings]
    else:
        parent = Path(out) if out is not None else settings[0].default_run_dir()
        run_dirs = [parent]
    _check_out(parent, sweep)
    if sweep:
        _check_parent_config(parent, config)
    check_settings(settings)
    results = []
    for setting, run_dir in zip(settings, run_dirs):
        try:
            result = run_experiment(setting, run_dir=run_dir, progress=progress, fail_fast=fail_fast,
                                    executor=executor, skip_check=skip_check)
        except TcsFewshotError:
            raise  # nothing of this run was written, or the directory holds another run
        except BaseException:
            if (run_dir / "manifest.json").is_file():  # stopped part-way: keep how to resume it
                _save_configs(setting, run_dir, parent if sweep else None, shot_values, way_values)
            raise
        _save_configs(setting, run_dir, parent if sweep else None, shot_values, way_values)
        write_run_tables(result)
        results.append(result)
        if on_result is not None:
            on_result(setting, result)
    return results


def run_configured(
    given: Mapping[str, Any],
    config_file: str | os.PathLike | None = None,
    *,
    executor: tuple[str, str | None, int | None] = ("local", None, None),
    on_result: Callable[[RunConfig, RunResult], None] | None = None,
    on_setting: Callable[[RunConfig, RunResult], None] | None = None,
) -> list[RunResult]:
    """What ``tcs-fewshot run`` does: ``given`` values over ``config_file``'s over the defaults, then
    one run or a sweep (:func:`run_sweep`).

    Args:
        given: Config keys set explicitly (the command line's options), e.g. ``{"shots": (1, 5)}``.
        config_file: A TOML file of the same keys (a saved ``config.toml`` resumes its run).
        executor: ``(name, address, chunk_size)`` of :func:`make_executor`.
        on_result: Called after a single setting (a plain run) with its config and result.
        on_setting: Called after each setting of a sweep instead.
    """
    from_file = load_config_file(config_file) if config_file else {}
    values = effective_config(from_file, given, source=f"config file '{config_file}'")
    executor_used = make_executor(*executor)
    single = len(values["shots"]) * len(values["ways"]) == 1
    return run_sweep(run_config(values), shots=values["shots"], ways=values["ways"], out=values["out"],
                     progress=not values["no_progress"], fail_fast=values["fail_fast"],
                     on_result=on_result if single else on_setting, executor=executor_used,
                     skip_check=values["skip_check"])


def _save_configs(setting: RunConfig, run_dir: Path, parent: Path | None, shots: tuple[int, ...],
                  ways: tuple[int, ...]) -> None:
    save_config(config_values(setting, out=run_dir), run_dir / CONFIG_FILE)
    if parent is not None:
        save_config(config_values(setting, out=parent, shots=shots, ways=ways), parent / CONFIG_FILE)
