"""Logging as the server sets it up: uvicorn-like lines on stderr (``INFO:     message``)
on the ``ferrosock``, ``ferrosock.error`` and ``ferrosock.access`` loggers, or the user's own
configuration file (``--log-config``: JSON or YAML for ``logging.config.dictConfig``, any
other file as an INI file for ``logging.config.fileConfig``)."""

from __future__ import annotations

import json
import logging
import logging.config
import sys
from pathlib import Path
from typing import Any

LOG_LEVELS = {
    "critical": logging.CRITICAL,
    "error": logging.ERROR,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
}


class _LevelPrefixFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        prefix = f"{record.levelname}:".ljust(10)
        return prefix + super().format(record)


def log_level_number(level: str) -> int:
    try:
        return LOG_LEVELS[level.lower()]
    except KeyError:
        raise ValueError(
            f"log_level must be one of {', '.join(LOG_LEVELS)}, not {level!r}"
        ) from None


def read_log_config(path: str) -> dict[str, Any] | None:
    """The dictConfig mapping a JSON or YAML file holds; None for an INI file. Raises
    ValueError naming the setting when the file cannot be read or parsed."""
    file = Path(path)
    try:
        text = file.read_text()
    except OSError as error:
        raise ValueError(f"log_config: cannot read {path}: {error.strerror}") from None
    suffix = file.suffix.lower()
    if suffix == ".json":
        try:
            loaded = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"log_config: {path} is not valid JSON: {error}") from None
    elif suffix in (".yaml", ".yml"):
        try:
            import yaml  # type: ignore[import-untyped, unused-ignore]
        except ImportError:
            raise ValueError(f"log_config: {path} is YAML and PyYAML is not installed") from None
        loaded = yaml.safe_load(text)
    else:
        return None
    if not isinstance(loaded, dict):
        raise ValueError(f"log_config: {path} does not hold a mapping")
    return loaded


def configure_logging(level: str, log_config: str | None = None) -> None:
    if log_config is not None:
        mapping = read_log_config(log_config)
        if mapping is None:
            logging.config.fileConfig(log_config, disable_existing_loggers=False)
        else:
            logging.config.dictConfig(mapping)
        return
    numeric = log_level_number(level)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LevelPrefixFormatter())
    for name in ("ferrosock", "ferrosock.error", "ferrosock.access"):
        log = logging.getLogger(name)
        log.handlers = [handler] if name == "ferrosock" else []
        log.setLevel(numeric)
        log.propagate = name != "ferrosock"
