"""`--help` that reads as words: every option's value is named (NAME, ID, SECONDS, FILE), flags show
none, instead of typer's ``<bool>``, ``<str>`` and ``<list[str]>``.

:class:`CleanHelpGroup` is the root command's class: when typer builds the command tree it walks every
command once and names each parameter that has no metavar of its own, from :data:`METAVARS` by
parameter name (the same name means the same thing in every command), else from its type.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Final

from typer.core import TyperArgument, TyperGroup

#: Parameter name → the word shown for its value. An option's own ``metavar=`` wins.
METAVARS: Final[Mapping[str, str]] = {
    "address": "HOST",
    "chunk_size": "N",
    "concurrency": "N",
    "config": "FILE",
    "connection": "NAME",
    "customer_key": "KEY",
    "customer_keys": "FILE",
    "email": "ADDRESS",
    "file": "FILE",
    "fmt": "FORMAT",
    "group": "GROUP",
    "health_dir": "DIR",
    "host": "HOST",
    "id_seed": "TEXT",
    "ids": "ID",
    "keep_logs": "DIR",
    "letter_id": "ID",
    "limit": "N",
    "list_id": "ID",
    "loglevel": "LEVEL",
    "max_tasks": "N",
    "name": "NAME",
    "output": "FILE",
    "pool": "POOL",
    "port": "PORT",
    "queues": "QUEUES",
    "reason": "TEXT",
    "redis_url": "URL",
    "rejects_path": "FILE",
    "request_id": "ID",
    "requests": "N",
    "scope": "SCOPE",
    "since": "WHEN",
    "before": "WHEN",
    "source": "SOURCE",
}
#: By type, for a parameter named in no row above.
_BY_TYPE: Final[Mapping[str, str]] = {"int": "N", "float": "NUMBER", "Path": "PATH"}


class _NamedArgument(TyperArgument):
    """An argument whose word (its metavar) stands alone: no ``<str>`` type beside it."""

    def display_type_rich(self, ctx: Any) -> str | None:
        return None


class CleanHelpGroup(TyperGroup):
    """The root group: names the value of every parameter of every command below it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for command in _commands(self):
            for param in [*command.params, _help_option(command)]:
                if param is not None:
                    name_value(param)

    def get_params(self, ctx: Any) -> list[Any]:
        # typer adds --install-completion and --show-completion to the root after building it.
        params: list[Any] = super().get_params(ctx)
        for param in params:
            name_value(param)
        return params


def _commands(command: Any) -> Iterator[Any]:
    """``command`` and every command below it (typer ships its own click: no isinstance on click's)."""
    yield command
    for sub in getattr(command, "commands", {}).values():
        yield from _commands(sub)


def _help_option(command: Any) -> Any:
    """The command's ``--help`` option, made now (click makes it on first use, then keeps it)."""
    return command.get_help_option(command.context_class(command))


def name_value(param: Any) -> None:
    """Give ``param`` a word for its value (nothing for a flag), unless it has one."""
    if getattr(param, "is_flag", False) or getattr(param, "count", False):
        param.metavar = param.metavar or ""  # a flag takes no value: show none
        return
    if param.metavar is None:
        param.metavar = metavar_for(param)
    if isinstance(param, TyperArgument):
        param.__class__ = _NamedArgument


def metavar_for(param: Any) -> str:
    name: str = param.name or ""
    if name in METAVARS:
        return METAVARS[name]
    if name.endswith("_s"):
        return "SECONDS"
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    return _BY_TYPE.get(getattr(annotation, "__name__", ""), name.upper() or "VALUE")
