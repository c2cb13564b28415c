"""Kill a worker exactly inside a fetch window: watch Redis's command stream and SIGKILL the process
group whose connection has just sent a fetch command.

A process of its own (so no thread of the test, of the in-process sandbox or of a producer delays
it) opens a plain socket to Redis, sends MONITOR and parses the stream line by line. Every line names
the client's address; the port is mapped to the worker owning that socket (the socket's inode among
the file descriptors of the worker's process group, read from /proc) and, when the line opens one of
these windows, the worker's whole process group is SIGKILLed at once:

- ``pump``: the pump's EVALSHA, once its script has popped an intake list and added the message to
  the intake stream (the reply saying what moved is on its way);
- ``intake_read``: an XREADGROUP of the intake stream that returns at once, or a blocked one at the
  XADD that serves it;
- ``intake_claim``: an XCLAIM of the intake stream, sent or run by a script (a restarted worker
  taking back its own entries, or a live one taking a dead one's);
- ``buffer_read``: an XREADGROUP of a connection's buffer stream;
- ``restore_lock``: kombu's ``SET unacked_mutex ... NX`` that opens a restore sweep;
- ``list_pop``: a BRPOP of an intake list that returns a message (kombu's fetch, which pops a message
  and records it as unacknowledged one round trip later: the design before the intake loop).

Which sightings become kills is the :class:`Plan`'s: a quota per window; not the window of the last
kill while another sighted window still has quota; never the last running worker; never a line read
more than ``max_lag_s`` after Redis saw it; a pause of ``min_gap_s`` after a kill (but for the
intake claim a restarted worker makes at once); at most ``max_intake_chain`` intake kills of one
worker until it acknowledges an intake entry (so the kills alone never make a message look like
poison).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
import re
import signal
import socket
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from multiprocessing.connection import Connection
from typing import Any, Final
from urllib.parse import urlparse

from producer.names import INTAKE_QUEUE, NATIVE_INTAKE_STREAM
from worker.keys import buffer_stream

#: A quoted argument of a MONITOR line (Redis escapes quotes, backslashes and bytes inside it).
_ARG: Final = re.compile(rb'"((?:[^"\\]|\\.)*)"')
#: The commands the watcher looks at; every other line is skipped unparsed.
_WANTED: Final = re.compile(
    rb'\] "(?:EVALSHA|XREADGROUP|XCLAIM|SET|BRPOP|LPUSH|XADD|XACK|RPOP)" ', re.IGNORECASE
)
#: The command of a MONITOR line starts within this many bytes.
_HEAD_BYTES: Final = 120
#: Key prefix of every connection's buffer stream.
_BUFFER_PREFIX: Final = buffer_stream("")
#: kombu's restore lock.
RESTORE_MUTEX: Final = "unacked_mutex"
#: How long the watcher waits for a MONITOR line before it looks at its control pipe again.
POLL_S: Final = 0.05
#: Bytes read from the MONITOR socket at a time.
READ_BYTES: Final = 1 << 20
#: How often the owners of the Redis connections are read again from /proc.
REFRESH_S: Final = 0.1
#: A port unknown this soon after a worker was armed is looked up at once (its fresh connection).
FRESH_S: Final = 10.0
#: The watcher's thread switch interval: the refresh thread must never hold up the MONITOR reader.
SWITCH_INTERVAL_S: Final = 0.0005
#: Longest wait for the watcher process to start monitoring.
START_TIMEOUT_S: Final = 30.0


class Window(StrEnum):
    PUMP = "pump"
    INTAKE_READ = "intake_read"
    INTAKE_CLAIM = "intake_claim"
    BUFFER_READ = "buffer_read"
    RESTORE_LOCK = "restore_lock"
    LIST_POP = "list_pop"


#: Windows in which a kill leaves an intake message half taken.
INTAKE_WINDOWS: Final = frozenset({Window.PUMP, Window.INTAKE_READ, Window.INTAKE_CLAIM, Window.LIST_POP})


@dataclass(frozen=True)
class Line:
    """One MONITOR line: when Redis saw the command, on which DB, from which client port (None for a
    command run by a Lua script), the command name and the raw rest of the line."""

    ts: float
    db: int
    port: int | None
    command: str
    rest: bytes

    def args(self, most: int) -> list[str]:
        """The first ``most`` arguments after the command (escapes left as Redis wrote them)."""
        found = _ARG.finditer(self.rest)
        next(found, None)
        return [m.group(1).decode("latin-1") for _, m in zip(range(most), found, strict=False)]


def parse(raw: bytes) -> Line | None:
    """``+1795973119.266301 [15 127.0.0.1:49858] "BRPOP" "a" "1"`` -> :class:`Line` (None otherwise)."""
    if not raw.startswith(b"+"):
        return None
    parts = raw[1:].split(b" ", 3)
    if len(parts) < 4 or not parts[1].startswith(b"["):
        return None
    ts, db, addr, rest = parts
    port_text = addr[:-1].rpartition(b":")[2]
    port = int(port_text) if port_text.isdigit() else None
    if port is None and addr != b"lua]":
        return None  # a unix socket: no worker here uses one
    end = rest.find(b'"', 1)
    return Line(float(ts), int(db[1:]), port, rest[1:end].decode("latin-1").upper(), rest)


@dataclass(frozen=True)
class Sighting:
    """A window opened by the client on ``port`` (``window`` None: it acknowledged an intake entry)."""

    window: Window | None
    port: int
    ts: float
    detail: str


def _intake_list(key: str) -> bool:
    return key == INTAKE_QUEUE or key.startswith(INTAKE_QUEUE + "\\x06")


@dataclass
class Hunter:
    """Turns MONITOR lines of one DB into sightings of fetch windows."""

    db: int
    _script_caller: int | None = None
    _script_popped: bool = False
    #: Clients blocked in a BRPOP or XREADGROUP (in the order they blocked) -> when their block times
    #: out and the keys they wait on.
    _blocked: dict[int, tuple[float, tuple[str, ...]]] = field(default_factory=dict)
    #: Messages pushed to each list and not yet popped, as far as the lines tell.
    _lists: Counter[str] = field(default_factory=Counter)
    #: An entry was added to the intake stream since the last read of new entries: the next read
    #: hands it out (reads of new entries are served in the order Redis runs them). Most of the
    #: intake loop's reads find nothing; killing one of those would kill with nothing in hand.
    _fresh_entries: bool = False

    def feed(self, line: Line) -> list[Sighting]:
        if line.db != self.db:
            return []
        if line.port is None:
            return self._scripted(line)
        self._blocked.pop(line.port, None)  # a new command: its block had ended
        self._script_caller = None
        return self._client(line, line.port)

    def _scripted(self, line: Line) -> list[Sighting]:
        if line.command == "RPOP":
            key = line.args(1)[0]
            self._lists[key] = max(self._lists[key] - 1, 0)
            self._script_popped = self._script_popped or _intake_list(key)
        if line.command == "XCLAIM" and self._script_caller is not None:
            return self._scripted_claim(line, self._script_caller)
        if line.command == "XREADGROUP" and self._script_caller is not None:
            return self._scripted_read(line, self._script_caller)
        if line.command != "XADD" or line.args(1)[0] != NATIVE_INTAKE_STREAM:
            return []
        self._fresh_entries = True
        found = self._serve(NATIVE_INTAKE_STREAM, line.ts)
        if self._script_caller is not None and self._script_popped:
            found.append(Sighting(Window.PUMP, self._script_caller, line.ts, "EVALSHA moved a message"))
            self._script_caller = None
        return found

    def _scripted_claim(self, line: Line, caller: int) -> list[Sighting]:
        """A script's XCLAIM of the intake stream (not a JUSTID refresh, which hands nothing out)."""
        if line.args(1)[0] != NATIVE_INTAKE_STREAM or b'"JUSTID"' in line.rest.upper():
            return []
        self._script_caller = None
        return [Sighting(Window.INTAKE_CLAIM, caller, line.ts, "XCLAIM in a script")]

    def _scripted_read(self, line: Line, caller: int) -> list[Sighting]:
        """The intake loop's read of new entries runs in a script (it stops at a byte budget)."""
        args = line.args(12)
        upper = [a.upper() for a in args]
        if "STREAMS" not in upper or NATIVE_INTAKE_STREAM not in args[upper.index("STREAMS") + 1 :]:
            return []
        if not self._fresh_entries:
            return []
        self._script_caller, self._fresh_entries = None, False
        return [Sighting(Window.INTAKE_READ, caller, line.ts, "XREADGROUP in a script, new entries")]

    def _client(self, line: Line, port: int) -> list[Sighting]:
        command = line.command
        if command == "EVALSHA":
            self._script_caller, self._script_popped = port, False
        elif command == "XREADGROUP":
            return self._read(line, port)
        elif command == "XCLAIM" and line.args(1)[0] == NATIVE_INTAKE_STREAM:
            return [Sighting(Window.INTAKE_CLAIM, port, line.ts, "XCLAIM")]
        elif command == "SET" and self._restore_lock(line):
            return [Sighting(Window.RESTORE_LOCK, port, line.ts, "SET NX")]
        elif command == "BRPOP":
            return self._brpop(line, port)
        elif command == "LPUSH":
            return self._serve(line.args(1)[0], line.ts)
        elif command == "XADD" and line.args(1)[0] == NATIVE_INTAKE_STREAM:
            self._fresh_entries = True
            return self._serve(NATIVE_INTAKE_STREAM, line.ts)
        elif command == "XACK" and line.args(1)[0] == NATIVE_INTAKE_STREAM:
            return [Sighting(None, port, line.ts, "XACK")]
        return []

    def _read(self, line: Line, port: int) -> list[Sighting]:
        args = line.args(12)
        upper = [a.upper() for a in args]
        if "STREAMS" not in upper:
            return []
        keys = args[upper.index("STREAMS") + 1 :]
        if NATIVE_INTAKE_STREAM in keys:
            self._fresh_entries = self._fresh_entries and ">" not in args
            if "BLOCK" in upper:
                timeout_s = float(args[upper.index("BLOCK") + 1]) / 1000
                self._blocked[port] = (_until(line.ts, timeout_s), (NATIVE_INTAKE_STREAM,))
                return []
            return [Sighting(Window.INTAKE_READ, port, line.ts, "XREADGROUP")]
        if any(k.startswith(_BUFFER_PREFIX) for k in keys):
            return [Sighting(Window.BUFFER_READ, port, line.ts, "XREADGROUP")]
        return []

    def _restore_lock(self, line: Line) -> bool:
        args = line.args(6)
        return bool(args) and args[0] == RESTORE_MUTEX and "NX" in (a.upper() for a in args)

    def _brpop(self, line: Line, port: int) -> list[Sighting]:
        """BRPOP pops the first of its keys that holds something, else it blocks."""
        args = line.args(64)
        keys = tuple(args[:-1])
        for key in keys:
            if self._lists[key] > 0:
                self._lists[key] -= 1
                if not _intake_list(key):
                    return []
                return [Sighting(Window.LIST_POP, port, line.ts, "BRPOP returned a message at once")]
        self._blocked[port] = (_until(line.ts, float(args[-1])), keys)
        return []

    def _serve(self, key: str, ts: float) -> list[Sighting]:
        """A push to ``key``: the client blocked longest on it gets it, else it waits in the key."""
        port = _first_blocked(self._blocked, key, ts)
        if port is None:
            self._lists[key] += key != NATIVE_INTAKE_STREAM
            return []
        if key == NATIVE_INTAKE_STREAM:
            self._fresh_entries = False
            return [Sighting(Window.INTAKE_READ, port, ts, "blocked XREADGROUP served by XADD")]
        if _intake_list(key):
            return [Sighting(Window.LIST_POP, port, ts, "blocked BRPOP served by LPUSH")]
        return []


def _until(ts: float, timeout_s: float) -> float:
    return ts + timeout_s if timeout_s > 0 else float("inf")


def _first_blocked(blocked: dict[int, tuple[float, tuple[str, ...]]], key: str, ts: float) -> int | None:
    """The client blocked longest on ``key`` whose block has not timed out (Redis serves in that order)."""
    for port, (until, keys) in list(blocked.items()):
        if until < ts:
            del blocked[port]
        elif key in keys:
            del blocked[port]
            return port
    return None


class Owners:
    """Which armed worker owns the Redis connection with a given client port.

    A thread re-reads every :data:`REFRESH_S` which sockets the armed workers' processes hold (their
    inodes, from /proc/<pid>/fd) and which local port each has (/proc/net/tcp), so a lookup on the
    watcher's hot path is a dict read. A port still unknown shortly after a worker was armed is looked
    up at once, once (a fresh connection of a restarted worker).
    """

    def __init__(self, redis_port: int) -> None:
        self.redis_port = redis_port
        #: Worker name -> process group id, for the workers that may be killed.
        self.armed: dict[str, int] = {}
        self._known: dict[int, tuple[str, int]] = {}
        self._checked: set[int] = set()
        self._armed_at = 0.0
        self._lock = threading.Lock()

    def arm(self, name: str, pgid: int) -> None:
        with self._lock:
            self.armed[name] = pgid
        self._armed_at = time.monotonic()

    def disarm(self, name: str) -> None:
        with self._lock:
            self.armed.pop(name, None)

    def owner(self, port: int) -> str | None:
        found = self._known.get(port)
        if found is None and port not in self._checked and time.monotonic() - self._armed_at < FRESH_S:
            self._checked.add(port)
            self.refresh()
            found = self._known.get(port)
        if found is None or self.armed.get(found[0]) != found[1]:
            return None
        return found[0]

    def refresh(self) -> None:
        with self._lock:
            armed = dict(self.armed)
        ports = _redis_sockets(self.redis_port)
        known: dict[int, tuple[str, int]] = {}
        for name, pgid in armed.items():
            for pid in _group(pgid):
                known.update({ports[i]: (name, pgid) for i in _socket_inodes(pid) if i in ports})
        self._known = known

    def keep_fresh(self, stop: threading.Event) -> None:
        while not stop.wait(REFRESH_S):
            with contextlib.suppress(OSError, ValueError):
                self.refresh()


def _redis_sockets(redis_port: int) -> dict[int, int]:
    """Socket inode -> local port of every TCP connection to ``redis_port`` (from /proc/net/tcp)."""
    found: dict[int, int] = {}
    with open("/proc/net/tcp", encoding="ascii") as table:
        next(table)
        for row in table:
            cols = row.split()
            if int(cols[2].rpartition(":")[2], 16) == redis_port:
                found[int(cols[9])] = int(cols[1].rpartition(":")[2], 16)
    return found


def _group(pgid: int) -> list[int]:
    """The process ``pgid`` and its descendants (from /proc/<pid>/task/<tid>/children)."""
    found, todo = [], [pgid]
    while todo:
        pid = todo.pop()
        found.append(pid)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as children:
                    todo += [int(c) for c in children.read().split()]
    return found


def _socket_inodes(pid: int) -> list[int]:
    inodes = []
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes.append(int(link[8:-1]))
    return inodes


@dataclass(frozen=True)
class Plan:
    #: Most kills per window.
    quotas: dict[Window, int]
    #: A line read later than this after Redis saw it is too late to kill inside its window.
    max_lag_s: float = 0.02
    #: Intake kills of one worker before it must acknowledge an intake entry again.
    max_intake_chain: int = 2
    #: Least time between two kills, so the workers do some work between them (an intake claim, which
    #: a restarted worker makes at once, may come sooner).
    min_gap_s: float = 0.0


@dataclass(frozen=True)
class Kill:
    window: Window
    worker: str
    #: From Redis seeing the command to the SIGKILL.
    lag_ms: float
    detail: str


@dataclass
class Judge:
    """Decides which sightings become kills, and kills."""

    plan: Plan
    owners: Owners
    kills: Counter[Window] = field(default_factory=Counter)
    seen: Counter[Window] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    lags_ms: list[float] = field(default_factory=list)
    _last: Window | None = None
    _last_at: float = 0.0
    _chain: Counter[str] = field(default_factory=Counter)

    def consider(self, sighting: Sighting) -> Kill | None:
        name = self.owners.owner(sighting.port)
        if sighting.window is None:
            if name is not None:
                self._chain[name] = 0
            return None
        window = sighting.window
        self.seen[window] += 1
        reason = self._refusal(window, name)
        if reason is None and time.time() - sighting.ts > self.plan.max_lag_s:
            reason = "read too late"
        if reason is not None or name is None:
            self.skipped[f"{window.value}: {reason or 'not a worker'}"] += 1
            return None
        return self._kill(name, sighting, window)

    def _refusal(self, window: Window, name: str | None) -> str | None:
        if name is None or name not in self.owners.armed:
            return "not an armed worker"
        if self.kills[window] >= self.plan.quotas.get(window, 0):
            return "quota reached"
        if window == self._last and self._other_window_open(window):
            return "same window as the last kill"
        if window in INTAKE_WINDOWS and self._chain[name] >= self.plan.max_intake_chain:
            return "intake chain"
        if len(self.owners.armed) < 2:
            return "last running worker"
        if window is not Window.INTAKE_CLAIM and time.monotonic() - self._last_at < self.plan.min_gap_s:
            return "too soon after the last kill"  # (a claim comes right after a restart: not held up)
        return None

    def _other_window_open(self, window: Window) -> bool:
        return any(w != window and self.kills[w] < self.plan.quotas.get(w, 0) for w in self.seen)

    def _kill(self, name: str, sighting: Sighting, window: Window) -> Kill | None:
        try:
            os.killpg(self.owners.armed[name], signal.SIGKILL)
        except ProcessLookupError:
            self.owners.disarm(name)
            return None
        lag_ms = (time.time() - sighting.ts) * 1000
        self.owners.disarm(name)
        self.kills[window] += 1
        self._last, self._last_at = window, time.monotonic()
        self._chain[name] = self._chain[name] + 1 if window in INTAKE_WINDOWS else 0
        self.lags_ms.append(lag_ms)
        return Kill(window, name, round(lag_ms, 3), sighting.detail)


@dataclass(frozen=True)
class WatchStats:
    kills: dict[str, int]
    seen: dict[str, int]
    skipped: dict[str, int]
    lags_ms: list[float]


def watch(host: str, port: int, db: int, plan: Plan, control: Connection, out: Any) -> None:
    """The watcher process: MONITOR, parse, kill; ``("arm", name, pgid)`` and ``("stop",)`` arrive on
    ``control``; ``("ready",)``, ``("kill", Kill)`` and finally ``("stats", WatchStats)`` go to ``out``."""
    owners, stop = Owners(port), threading.Event()
    hunter, judge = Hunter(db), Judge(plan, owners)
    threading.Thread(target=owners.keep_fresh, args=(stop,), name="owners", daemon=True).start()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    with socket.create_connection((host, port)) as sock:
        sock.sendall(b"MONITOR\r\n")
        sock.settimeout(POLL_S)
        out.put(("ready",))
        pending = b""
        while _obey(control, owners):
            try:
                chunk = sock.recv(READ_BYTES)
            except TimeoutError:
                continue
            if not chunk:
                break  # Redis went away
            lines = (pending + chunk).split(b"\r\n")
            pending = lines.pop()
            for raw in lines:
                _judge_line(raw, hunter, judge, out)
    kills = {w.value: n for w, n in judge.kills.items()}
    seen = {w.value: n for w, n in judge.seen.items()}
    stats = WatchStats(kills, seen, dict(judge.skipped), judge.lags_ms)
    stop.set()
    out.put(("stats", stats))


def _obey(control: Connection, owners: Owners) -> bool:
    while control.poll():
        message = control.recv()
        if message[0] == "stop":
            return False
        owners.arm(message[1], message[2])
    return True


def _judge_line(raw: bytes, hunter: Hunter, judge: Judge, out: Any) -> None:
    if not _WANTED.search(raw, 0, _HEAD_BYTES):
        return
    line = parse(raw)
    if line is None:
        return
    for sighting in hunter.feed(line):
        kill = judge.consider(sighting)
        if kill is not None:
            out.put(("kill", kill))


class WindowKiller:
    """The watcher process, seen from the test: ``arm`` workers, take ``next_kill``, ``stop``."""

    def __init__(self, redis_url: str, plan: Plan) -> None:
        url = urlparse(redis_url)
        self._target = (url.hostname or "127.0.0.1", url.port or 6379, int((url.path or "/0")[1:] or 0))
        self._plan = plan
        context = multiprocessing.get_context("spawn")
        self._control, child_end = context.Pipe()
        self._out: Any = context.Queue()
        self._proc = context.Process(
            target=watch, args=(*self._target, plan, child_end, self._out), name="window-killer", daemon=True
        )
        self.stats: WatchStats | None = None

    def start(self) -> WindowKiller:
        self._proc.start()
        message = self._out.get(timeout=START_TIMEOUT_S)
        assert message == ("ready",), f"the window killer did not start: {message!r}"
        return self

    def arm(self, name: str, pgid: int) -> None:
        self._control.send(("arm", name, pgid))

    def next_kill(self, timeout_s: float) -> Kill | None:
        try:
            message = self._out.get(timeout=timeout_s)
        except queue.Empty:
            return None
        assert message[0] == "kill", f"unexpected message from the window killer: {message!r}"
        kill: Kill = message[1]
        return kill

    def stop(self) -> list[Kill]:
        """Stop killing; returns the kills not yet taken (their workers need a restart)."""
        self._control.send(("stop",))
        late: list[Kill] = []
        while self.stats is None:
            message = self._out.get(timeout=START_TIMEOUT_S)
            if message[0] == "kill":
                late.append(message[1])
            else:
                self.stats = message[1]
        self._proc.join(timeout=START_TIMEOUT_S)
        return late

    def close(self) -> None:
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(timeout=START_TIMEOUT_S)
