"""``ferrosock run module:app`` (also ``python -m ferrosock run ...``).

Every flag is generated from a ``Config`` field, so flags, ``run()`` keywords and
``App(...)`` settings share names and defaults."""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import os
import sys
import types
import typing
from dataclasses import fields
from typing import Any, NoReturn

from .config import Config, flag_of, load_env_file


def _converter(hint: Any) -> tuple[Any, str | None]:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = args[0] if isinstance(hint, types.UnionType) or typing.get_origin(hint) else hint
    if typing.get_origin(base) is list:
        return (lambda text: [part.strip() for part in text.split(",") if part.strip()]), None
    if base is bool:
        return None, "boolean"
    return base, None


class _Parser(argparse.ArgumentParser):
    """Errors are one line naming the flag (no usage block): ``ferrosock run: error: ...``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _help(text: str, default: Any) -> str:
    """The field's help with its default said once (some helps already say it)."""
    if "default" in text:
        return text
    shown = "none" if default is None else "''" if default == "" else default
    return f"{text} (default: {shown})"


def _version() -> str:
    try:
        return importlib.metadata.version("ferrosock")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ferrosock", description="Run a ferrosock app.")
    parser.add_argument("--version", action="version", version=f"ferrosock {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = commands.add_parser("run", help="serve an app: ferrosock run module:app")
    run.add_argument("app", help="the app as module:attribute, e.g. examples.chat:app")
    run.add_argument("--app-dir", default=".", help="directory to import the app from (default: .)")
    hints = typing.get_type_hints(Config)
    for field in fields(Config):
        flag = flag_of(field)
        convert, action = _converter(hints[field.name])
        options: dict[str, Any] = {
            "dest": field.name,
            "default": argparse.SUPPRESS,
            "help": _help(field.metadata.get("help", ""), field.default),
        }
        if action == "boolean":
            run.add_argument(flag, action=argparse.BooleanOptionalAction, **options)
        else:
            run.add_argument(flag, type=convert, **options)
    return parser


def import_app(reference: str, app_dir: str = ".") -> Any:
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise SystemExit(f'error: the app must be given as "module:attribute", not {reference!r}')
    sys.path.insert(0, os.path.abspath(app_dir))
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name != module_name and not module_name.startswith(f"{error.name}."):
            raise
        raise SystemExit(f"error: could not import module {module_name!r}") from error
    try:
        app = module
        for part in attribute.split("."):
            app = getattr(app, part)
    except AttributeError:
        raise SystemExit(f"error: module {module_name!r} has no attribute {attribute!r}") from None
    return app


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = vars(build_parser().parse_args(argv))
    args.pop("command")
    if args.get("reload"):
        from .reload import run_with_reload

        raise SystemExit(run_with_reload(argv, args.get("reload_dirs"), args.get("fd")))
    from .process import check_settings, run

    try:
        if args.get("env_file"):
            load_env_file(args["env_file"])  # before the app's module reads its environment
        app = import_app(args.pop("app"), args.pop("app_dir"))
        if not args.get("factory"):
            check_settings(Config.from_settings(getattr(app, "settings", {}), args))
    except (TypeError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None
    run(app, **args)
