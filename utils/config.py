"""YAML configuration mapped onto dataclasses, with command-line overrides.

Each command has a dataclass schema with documented defaults and a YAML file
in ``configs/`` that mirrors it. Values are merged in this order: schema
defaults, the YAML file, then overrides (``key=value`` strings or the named
command-line flags that were given). Unknown keys and wrongly typed values
raise :class:`ConfigError` naming the key.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable
from dataclasses import is_dataclass
from typing import Any, TypeVar

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .atomic import write_text
from .errors import ToolkitError

__all__ = ["ConfigError", "load_config", "config_from_args", "add_config_args", "save_config", "config_to_dict"]

T = TypeVar("T")


class ConfigError(ToolkitError, ValueError):
    """A configuration file or override is invalid."""


def load_config(schema: type[T], path: str | os.PathLike | None = None, overrides: Iterable[str] = ()) -> T:
    """Build a ``schema`` instance from defaults, a YAML file and overrides.

    Args:
        schema: a dataclass type (nested dataclasses allowed).
        path: YAML file, or None for defaults only.
        overrides: ``"a.b=value"`` strings, applied last.
    """
    if not is_dataclass(schema):
        raise TypeError(f"{schema} is not a dataclass")
    try:
        conf = OmegaConf.structured(schema)
        if path is not None:
            try:
                with open(path, encoding="utf-8") as fh:
                    loaded = yaml.safe_load(fh) or {}
            except OSError as err:
                raise ConfigError(f"{path}: cannot read config ({err.strerror or err})") from None
            except yaml.YAMLError as err:
                raise ConfigError(f"{path}: invalid YAML ({err})") from None
            if not isinstance(loaded, dict):
                raise ConfigError(f"{path}: expected a mapping at the top level")
            conf = OmegaConf.merge(conf, loaded)
        overrides = list(overrides)
        if overrides:
            conf = OmegaConf.merge(conf, OmegaConf.from_dotlist(overrides))
        return OmegaConf.to_object(conf)
    except OmegaConfBaseException as err:
        where = f"{path}: " if path else ""
        message = str(err).strip().splitlines()[0]
        key = getattr(err, "full_key", None)
        raise ConfigError(f"{where}invalid config ({f'{key}: ' if key else ''}{message})") from None


def add_config_args(parser: argparse.ArgumentParser, default_config: str | None, example: str) -> None:
    """``--config FILE`` and repeatable ``--set key=value``; ``example`` is a ``key=value`` of this command's
    own config, shown in the help."""
    parser.add_argument("--config", default=default_config, help=f"YAML config (default: {default_config})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override any config value, e.g. --set {example} (repeatable)")


def config_from_args(schema: type[T], args: argparse.Namespace, flags: dict[str, str]) -> T:
    """Load ``args.config`` and apply named flags, then ``--set`` overrides.

    Args:
        flags: command-line attribute -> config key; a flag left at ``None``
            is not applied.
    """
    overrides = []
    for attr, key in flags.items():
        value = getattr(args, attr, None)
        if value is not None:
            overrides.append(f"{key}={_dotlist_value(value)}")
    overrides += list(getattr(args, "overrides", []))
    return load_config(schema, getattr(args, "config", None), overrides)


def _dotlist_value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_dotlist_value(v) for v in value) + "]"
    if isinstance(value, str):
        return "'" + value.replace("'", "\\'") + "'"
    return str(value)


def config_to_dict(config) -> dict:
    return OmegaConf.to_container(OmegaConf.structured(config), resolve=True)


def save_config(path: str | os.PathLike, config) -> None:
    """Write the fully resolved config as YAML (atomically)."""
    write_text(path, yaml.safe_dump(config_to_dict(config), sort_keys=False))
