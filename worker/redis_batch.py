"""Hot-path pipelines: commands packed by hiredis and sent in one write, replies read in one go.

Intake and delivery record everything in MULTI/EXEC transactions of hundreds to thousands of
commands. redis-py's pipeline spends about 12 µs of client CPU per command on its command methods,
argument checks, per-command packing and per-reply bookkeeping: a quarter of a worker's CPU per
record. :class:`Batch` queues plain argument tuples through the few methods those transactions use,
packs them all with ``hiredis.pack_command`` and reads the replies with the connection's own
(hiredis) parser: about 2 µs a command (see ``bench/README.md`` for the measurement). It borrows a
connection from the client's pool, so it follows the client's settings (timeouts, TLS, Sentinel).

Transactions keep redis-py's semantics: the commands are queued inside MULTI and run by EXEC
atomically; a command the server refuses to queue aborts the whole transaction (EXECABORT); an
error while running one command is raised after EXEC (the others ran, as with redis-py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import hiredis
import redis
from redis.exceptions import ResponseError

Arg = str | bytes | int | float


class Batch:
    """Commands queued with the methods of a redis-py pipeline, run with :meth:`execute`."""

    def __init__(self, client: redis.Redis, *, transaction: bool = True) -> None:
        self._client = client
        self._transaction = transaction
        self._commands: list[tuple[Arg, ...]] = []  # hiredis packs str, bytes, int and float

    def __len__(self) -> int:
        return len(self._commands)

    # -- the commands the hot paths use (same signatures as redis-py's) --------------------------

    def execute_command(self, *args: Arg) -> Batch:
        self._commands.append(args)
        return self

    def hset(
        self,
        name: str,
        key: str | None = None,
        value: Arg | None = None,
        mapping: Mapping[str, Arg] | None = None,
    ) -> Batch:
        pairs: list[Arg] = [key, value] if key is not None and value is not None else []
        for field, item in (mapping or {}).items():
            pairs += [field, item]
        return self.execute_command("HSET", name, *pairs)

    def hdel(self, name: str, *keys: str) -> Batch:
        return self.execute_command("HDEL", name, *keys)

    def hexists(self, name: str, key: str) -> Batch:
        return self.execute_command("HEXISTS", name, key)

    def hmget(self, name: str, keys: list[str]) -> Batch:
        return self.execute_command("HMGET", name, *keys)

    def hincrby(self, name: str, key: str, amount: int = 1) -> Batch:
        return self.execute_command("HINCRBY", name, key, amount)

    def hincrbyfloat(self, name: str, key: str, amount: float = 1.0) -> Batch:
        return self.execute_command("HINCRBYFLOAT", name, key, repr(float(amount)))

    def expire(self, name: str, time: int) -> Batch:
        return self.execute_command("EXPIRE", name, int(time))

    def xadd(self, name: str, fields: Mapping[str, Arg]) -> Batch:
        pairs: list[Arg] = []
        for field, item in fields.items():
            pairs += [field, item]
        return self.execute_command("XADD", name, "*", *pairs)

    def xack(self, name: str, group: str, *ids: str) -> Batch:
        return self.execute_command("XACK", name, group, *ids)

    def xdel(self, name: str, *ids: str) -> Batch:
        return self.execute_command("XDEL", name, *ids)

    def zadd(self, name: str, mapping: Mapping[str, float]) -> Batch:
        pairs: list[Arg] = []
        for member, score in mapping.items():
            pairs += [repr(float(score)), member]
        return self.execute_command("ZADD", name, *pairs)

    def zrem(self, name: str, *members: str) -> Batch:
        return self.execute_command("ZREM", name, *members)

    def sadd(self, name: str, *members: str) -> Batch:
        return self.execute_command("SADD", name, *members)

    def delete(self, *names: str) -> Batch:
        return self.execute_command("DEL", *names)

    def set(self, name: str, value: Arg, ex: int | None = None, px: int | None = None) -> Batch:
        extra: list[Arg] = ["EX", int(ex)] if ex is not None else (["PX", int(px)] if px is not None else [])
        return self.execute_command("SET", name, value, *extra)

    # -- running --------------------------------------------------------------------------------

    def execute(self) -> list[Any]:
        """Send everything queued in one write; returns one reply per command (EXEC's, in a
        transaction). Raises the first command's error, as redis-py does."""
        if not self._commands:
            return []
        commands = self._commands
        self._commands = []
        if self._transaction:
            commands = [("MULTI",), *commands, ("EXEC",)]
        payload = b"".join(hiredis.pack_command(c) for c in commands)  # type: ignore[arg-type]
        pool = self._client.connection_pool
        connection = pool.get_connection()
        try:
            connection.send_packed_command([payload])  # type: ignore[no-untyped-call]
            replies = [connection.read_response(disable_decoding=False) for _ in commands]
        except BaseException:
            connection.disconnect()  # type: ignore[no-untyped-call]  # its stream's state is unknown
            raise
        finally:
            pool.release(connection)
        return self._results(replies)

    def _results(self, replies: list[Any]) -> list[Any]:
        if not self._transaction:
            _raise_first(replies)
            return replies
        queued, executed = replies[1:-1], replies[-1]
        _raise_first(queued)  # a command the server would not queue: EXEC aborted the whole transaction
        if isinstance(executed, ResponseError):
            raise executed
        results = list(executed) if executed is not None else []
        _raise_first(results)
        return results


def _plain(args: tuple[Arg, ...]) -> tuple[str | bytes, ...]:
    """hiredis packs str and bytes; numbers go as their text (what Redis reads them as)."""
    return tuple(
        a if isinstance(a, str | bytes) else repr(a) if isinstance(a, float) else str(a) for a in args
    )


def _raise_first(replies: list[Any]) -> None:
    for reply in replies:
        if isinstance(reply, ResponseError):
            raise reply
