"""Compose ``configs/COMMAND.yaml`` with Hydra and validate it against a frozen dataclass.

Every problem (unknown key, wrong type, bad value, missing required key) becomes one
:class:`~gensis.errors.GensisError` line naming the key.
"""

from __future__ import annotations

import dataclasses
import os
import re
import typing
from pathlib import Path
from typing import Any, Iterable, Sequence

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from gensis.errors import GensisError


def config_dir() -> Path:
    """The ``configs/`` folder (``GENSIS_CONFIG_DIR`` overrides it)."""
    override = os.environ.get("GENSIS_CONFIG_DIR")
    path = Path(override).absolute() if override else Path(__file__).resolve().parents[2] / "configs"
    if not path.is_dir():
        raise GensisError(f"config folder {path} not found; set GENSIS_CONFIG_DIR to the gensis configs/ folder")
    return path


def experiment_presets() -> list[str]:
    """The names of ``configs/experiment/*.yaml`` (the values of ``experiment=``)."""
    return sorted(p.stem for p in (config_dir() / "experiment").glob("*.yaml"))


def _foreign_blocks(schema: type, other_blocks: Iterable[str]) -> set[str]:
    """Top-level keys of other commands that ``schema`` does not have."""
    return set(other_blocks) - {f.name for f in dataclasses.fields(schema)}


def _check_overrides(overrides: Sequence[str], command: str, foreign: set[str]) -> None:
    for item in overrides:
        key, sep, _ = item.partition("=")
        if not sep or not key.strip():
            raise GensisError(f"argument '{item}' is not key=value (for example tile.size=224)")
        block = key.lstrip("+~").split(".")[0]
        if block in foreign:  # a preset may carry other commands' blocks; an argument may not
            raise GensisError(f"gensis {command}: '{key}' is not a setting of this command "
                              f"('{block}' belongs to other commands); see gensis {command} --help for its keys")


def _field_type(schema: type, dotted: str):
    """The annotated type of ``dotted`` (``a.b.c``) in the dataclass ``schema``, or None if it has none."""
    node = schema
    for part in dotted.split("."):
        if not dataclasses.is_dataclass(node):
            return None
        hints = typing.get_type_hints(node)
        if part not in hints:
            return None
        node = hints[part]
    return node


def _is_text(annotation) -> bool:
    """``str`` or ``Optional[str]``."""
    if annotation is str:
        return True
    args = typing.get_args(annotation)
    return typing.get_origin(annotation) is typing.Union and set(args) == {str, type(None)}


def hydra_quote(value: str) -> str:
    """``value`` as a Hydra quoted string: read back exactly, whatever letters, spaces, commas, brackets or ``=``
    it holds (Hydra keeps backslashes literal except before a quote or at the end)."""
    escaped = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", value)
    escaped = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, escaped)
    return f"'{escaped}'"


def quote_text_values(overrides: Sequence[str], schema: type) -> list[str]:
    """Quote the value of every text setting (paths, names), so that ``slides=/data/é, [1].svs`` reaches the
    config as written instead of failing in Hydra's override grammar. ``null``, quoted values and
    ``${...}`` interpolations are left as they are."""
    quoted = []
    for item in overrides:
        key, sep, value = item.partition("=")
        bare = key.lstrip("+~")
        if (sep and value and value != "null" and value[0] not in "'\"" and "${" not in value
                and _is_text(_field_type(schema, bare))):
            item = f"{key}={hydra_quote(value)}"
        quoted.append(item)
    return quoted


def compose_config(command: str, schema: type, overrides: Sequence[str], other_blocks: Iterable[str] = ()) -> Any:
    """Compose ``configs/<command>.yaml`` with ``overrides`` and return a validated ``schema`` instance.

    ``other_blocks`` are top-level keys that belong to other commands: an experiment preset
    may set them for those commands, and they are dropped here instead of being refused.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    overrides = list(overrides)
    _check_overrides(overrides, command, _foreign_blocks(schema, other_blocks))
    overrides = quote_text_values(overrides, schema)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
            raw = compose(config_name=command, overrides=overrides)
    except HydraException as err:
        raise GensisError(_hydra_message(err, command)) from None
    except OmegaConfBaseException as err:
        raise GensisError(_omegaconf_message(err, command)) from None
    finally:
        GlobalHydra.instance().clear()
    return validate(raw, schema, command, other_blocks)


def validate(raw: DictConfig, schema: type, command: str, other_blocks: Iterable[str] = ()) -> Any:
    """Check ``raw`` against the dataclass ``schema`` and build the frozen config object."""
    data = OmegaConf.to_container(raw, resolve=False)
    for key in _foreign_blocks(schema, other_blocks):
        data.pop(key, None)
    data.pop("experiment", None)
    try:
        base = OmegaConf.structured(schema)
        _unfreeze(base)  # frozen dataclasses make read-only nodes; the object built below is frozen again
        merged = OmegaConf.merge(base, data)
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        raise GensisError(_omegaconf_message(err, command)) from None
    except (ValueError, TypeError) as err:  # raised by __post_init__ checks
        raise GensisError(f"gensis {command}: {err}") from None


def _unfreeze(node: DictConfig) -> None:
    OmegaConf.set_readonly(node, False)
    for key in node:
        child = node._get_node(key)
        if isinstance(child, DictConfig):
            _unfreeze(child)


def _omegaconf_message(err: OmegaConfBaseException, command: str) -> str:
    key = getattr(err, "full_key", None) or ""
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    name = type(err).__name__
    if name == "MissingMandatoryValue":
        return f"gensis {command}: missing required key '{key}' (give {key}=...; see gensis {command} --help)"
    if name in ("ConfigKeyError", "ConfigAttributeError"):
        return f"gensis {command}: unknown key '{key}' (see gensis {command} --help for the valid keys)"
    if name == "ValidationError":
        value = getattr(err, "value", None)
        return f"gensis {command}: bad value {value!r} for key '{key}': {text}"
    return f"gensis {command}: {('key ' + repr(key) + ': ') if key else ''}{text}"


def _hydra_message(err: Exception, command: str) -> str:
    text = " ".join(str(err).split())
    if "Could not override" in text or "not in struct" in text:
        key = text.split("'")[1] if "'" in text else text
        hint = f"; to add an entry to a free-form dict write +{key}=..." if ".kwargs." in key else ""
        return f"gensis {command}: unknown key '{key}' (see gensis {command} --help for the valid keys{hint})"
    if "Could not find" in text and "experiment" in text:
        return (f"gensis {command}: {text.split('Available options')[0].strip()} "
                f"(available experiments: {', '.join(experiment_presets())})")
    return f"gensis {command}: {text}"


def to_yaml(cfg: Any) -> str:
    """The resolved config as YAML (written into every run directory)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def describe_schema(schema: type, prefix: str = "") -> list[tuple[str, str, str]]:
    """(key, default, help) for every leaf of a config dataclass, for ``--help``."""
    rows = []
    hints = typing.get_type_hints(schema)
    for field in dataclasses.fields(schema):
        key = prefix + field.name
        kind = hints[field.name]
        if dataclasses.is_dataclass(kind):
            rows.extend(describe_schema(kind, key + "."))
            continue
        if field.default is not dataclasses.MISSING:
            default = field.default
        elif field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = field.default_factory()  # type: ignore[misc]
        else:
            default = MISSING
        shown = "(required)" if default == MISSING else ("null" if default is None else str(default))
        rows.append((key, shown, field.metadata.get("help", "")))
    return rows
