"""Frozen dataclass configs: paper defaults, a TOML/JSON file, then `key=value` overrides.

Every step has one frozen dataclass; nested dataclasses are addressed with dotted keys
(`stage1.min_chars=5`). Unknown keys and values of the wrong type are errors that name the key
and where it came from. The resolved config is written as JSON next to every output, and that
file loads back with `--config`.

One work folder: a setup file names its root once (top-level `work_dir = "work/sample"`), and every
path a step's class lists in `WORK_PATHS` (templates over `WORK_FOLDER`) that the file or the command
line does not set derives from it (`{work_dir}/prepared`, `{work_dir}/stage2-{method}`, ...). The
sweep's runs take `[stage2]`, with `[sweep.stage2]` listing only what differs.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import tomllib
import types
import typing
from pathlib import Path
from typing import Any

from pipeline.errors import MimoError


# A setup's work folder: where each step writes (and the next step reads) by default
WORK_FOLDER = {"prepared": "{work_dir}/prepared", "cache": "{work_dir}/teacher_cache.zarr",
               "stage1": "{work_dir}/stage1", "stage2": "{work_dir}/stage2-{method}", "sweep": "{work_dir}/sweep",
               "eval": "{work_dir}/eval"}


def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _is_config(tp) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _unknown(key: str, known, where: str) -> MimoError:
    close = difflib.get_close_matches(key, list(known), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return MimoError(f"unknown config key {key!r} in {where}{hint}")


def _coerce(value: Any, tp, key: str, where: str, from_text: bool) -> Any:
    """Check `value` against the annotation `tp`; parse it first when it came from the command line."""
    bad = MimoError(f"config key {key!r} in {where}: expected {_type_name(tp)}, got {value!r}")
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if type(None) in args and (value is None or (from_text and value in ("", "none", "null"))):
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key, where, from_text)
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise MimoError(f"config key {key!r} in {where}: {value!r} is not one of {', '.join(map(str, choices))}")
        return value
    if origin is tuple:
        (item_tp, *_rest) = typing.get_args(tp)
        if _is_config(item_tp):  # a list of tables ([[eval.models]]): each one a config of its own
            if from_text and isinstance(value, str):
                try:
                    value = json.loads(value)
                except json.JSONDecodeError:
                    raise bad from None
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, dict) for v in value):
                raise MimoError(f"config key {key!r} in {where}: expected a list of tables, got {value!r}")
            return tuple(_apply(item_tp(), v, where, from_text, f"{key}[{i}].") for i, v in enumerate(value))
        if from_text and isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    value = json.loads(text)
                except json.JSONDecodeError:
                    raise bad from None
            else:
                value = [v.strip() for v in text.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise bad
        return tuple(_coerce(v, item_tp, key, where, from_text) for v in value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if from_text and isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
        raise bad
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if from_text and isinstance(value, str):
            try:
                return int(value.replace("_", ""))
            except ValueError:
                raise bad from None
        raise bad
    if tp is float:
        if isinstance(value, str) and from_text:
            try:
                value = float(value)
            except ValueError:
                raise bad from None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        raise bad
    if tp is str:
        if isinstance(value, str):
            return value
        raise bad
    raise TypeError(f"unsupported config annotation {tp!r} for {key}")


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is tuple:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is typing.Literal:
        return "one of " + ", ".join(map(str, typing.get_args(tp)))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _apply(cfg, updates: dict[str, Any], where: str, from_text: bool, prefix: str = ""):
    """Return a copy of `cfg` with nested `updates` applied, every value type-checked."""
    types_ = _field_types(type(cfg))
    changes = {}
    for key, value in updates.items():
        full = prefix + key
        if key not in types_:
            raise _unknown(full, [prefix + k for k in types_], where)
        tp = types_[key]
        if _is_config(tp):
            if not isinstance(value, dict):
                raise MimoError(f"config key {full!r} in {where}: expected a table of keys, got {value!r}")
            changes[key] = _apply(getattr(cfg, key), value, where, from_text, full + ".")
        else:
            changes[key] = _coerce(value, tp, full, where, from_text)
    try:
        return dataclasses.replace(cfg, **changes)
    except MimoError as err:
        raise MimoError(f"{where}: {err}") from None


def parse_overrides(overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Turn ['a.b=1', 'c=x'] into {'a': {'b': '1'}, 'c': 'x'} (values stay text until typed)."""
    nested: dict[str, Any] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise MimoError(f"override {item!r} is not of the form key=value")
        node = nested
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise MimoError(f"override {item!r} conflicts with an earlier one")
        node[leaf] = value
    return nested


def read_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise MimoError(f"config file {path} does not exist")
    if path.suffix not in (".toml", ".json"):
        raise MimoError(f"config file {path}: expected a .toml or .json file")
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise MimoError(f"config file {path} is not valid: {err}") from None
    if not isinstance(data, dict):
        raise MimoError(f"config file {path}: expected a table of settings at the top level")
    return data


# The sections a setup file may hold, one per CLI step (configs/sample.toml, configs/paper.toml),
# and the one setting beside them: the work folder the steps' default paths derive from.
STEPS = ("prepare", "teacher_cache", "stage1", "stage2", "sweep", "eval")
TOP_LEVEL = ("work_dir",)


def step_section(data: dict[str, Any], step: str, path) -> dict[str, Any]:
    """The settings of `step` in a config file: a setup file's [step] table (with the file's work_dir, and
    for the sweep [stage2] under [sweep.stage2]), or a resolved config.json."""
    if "_step" in data:  # written by write_resolved_config: one step's settings at top level
        if data["_step"] != step:
            raise MimoError(f"config file {path} holds the {data['_step']!r} step's config, not {step!r}")
        return {k: v for k, v in data.items() if k != "_step"}
    for key in data:
        if key not in STEPS + TOP_LEVEL:
            raise _unknown(key, STEPS, f"config file {path} (top-level sections are steps)")
    for key in STEPS:
        if not isinstance(data.get(key, {}), dict):
            raise MimoError(f"config file {path}: [{key}] must be a table")
    section = dict(data.get(step, {}))
    if "work_dir" in data:
        if not isinstance(data["work_dir"], str):
            raise MimoError(f"config file {path}: work_dir must be a folder path, got {data['work_dir']!r}")
        section.setdefault("work_dir", data["work_dir"])
    if step == "sweep" and data.get("stage2"):  # the sweep's runs inherit [stage2]; [sweep.stage2] overrides
        inner = section.get("stage2", {})
        if not isinstance(inner, dict):
            raise MimoError(f"config file {path}: [sweep.stage2] must be a table")
        section["stage2"] = {**data["stage2"], **inner}
    return section


def _merge(into: dict, updates: dict) -> dict:
    for key, value in updates.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value
    return into


def derive_work_paths(cfg, explicit: dict[str, Any], work_dir: str | None = None):
    """`cfg` with every WORK_PATHS entry not in `explicit` (the keys a file or the command line set)
    derived from its work_dir; nested configs take their parent's work_dir unless they set their own."""
    changes: dict[str, Any] = {}
    if hasattr(cfg, "work_dir"):
        if work_dir is not None and "work_dir" not in explicit:
            changes["work_dir"] = work_dir
        work_dir = changes.get("work_dir", cfg.work_dir)
        values = {**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}, "work_dir": work_dir}
        for name, template in getattr(type(cfg), "WORK_PATHS", {}).items():
            if name not in explicit:
                changes[name] = (tuple(t.format(**values) for t in template) if isinstance(template, tuple)
                                 else template.format(**values))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            nested = explicit.get(f.name, {})
            changes[f.name] = derive_work_paths(value, nested if isinstance(nested, dict) else {}, work_dir)
    return dataclasses.replace(cfg, **changes) if changes else cfg


def load_config(cls, step: str, path: str | Path | None = None, overrides=()):
    """Build `cls` from its defaults, then the [step] section of the file at `path`, then overrides;
    the work-folder paths neither of them set derive from work_dir (the module docstring)."""
    cfg = cls()
    explicit: dict[str, Any] = {}
    if path is not None:
        data = step_section(read_config_file(path), step, path)
        cfg = _apply(cfg, data, f"config file {path}", from_text=False)
        _merge(explicit, data)
    if overrides:
        updates = parse_overrides(overrides)
        cfg = _apply(cfg, updates, "the command line", from_text=True)
        _merge(explicit, updates)
    try:
        return derive_work_paths(cfg, explicit)
    except MimoError as err:
        raise MimoError(f"{path or 'the command line'}: {err}") from None


def changed_settings(before: dict, now: dict) -> list[str]:
    """The keys, sorted, whose values differ between two flat dicts (fingerprints, resolved settings)."""
    return [key for key in sorted(set(before) | set(now)) if before.get(key) != now.get(key)]


def config_to_dict(cfg) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            value = config_to_dict(value)
        elif isinstance(value, tuple):
            value = [config_to_dict(v) if dataclasses.is_dataclass(v) else v for v in value]
        out[f.name] = value
    return out


def write_resolved_config(cfg, out_dir: str | Path, step: str) -> Path:
    """Write `config.json` (the resolved config; loadable with --config) into `out_dir`."""
    path = Path(out_dir) / "config.json"
    data = {"_step": step, **config_to_dict(cfg)}
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path
