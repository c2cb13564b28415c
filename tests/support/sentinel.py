"""A Redis Sentinel topology of the test's own on loopback: a primary, replicas and Sentinels.

Every process is the same ``redis-server`` binary the other tests use
(:func:`unsub_dev.localstack.redis_server.server_binary`), the Sentinels started with ``--sentinel``
on a config file of their own (Sentinel rewrites it). Ports are free loopback ports; nothing is
persisted. ``stop()`` ends every process it started.

    with SentinelTopology(tmp_path, replicas=1, sentinels=3) as topo:
        url = topo.url           # sentinel://127.0.0.1:p1;sentinel://127.0.0.1:p2;... /0
        topo.kill_primary()      # SIGKILL
        topo.wait_promoted()     # a replica is the new primary
"""

from __future__ import annotations

import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import redis

from tests.support.waiting import wait_for
from unsub_dev.localstack.redis_server import free_port, redis_answers, server_binary

#: The master name the Sentinels monitor (the settings' ``sentinel_master``).
MASTER_NAME: Final = "unsub-test"
#: Sentinel's wait before it calls an unanswering primary down; short, so a test's failover is quick.
DOWN_AFTER_MS: Final = 1000
#: Sentinel's failover timeout (also the least time between two failovers of the same primary).
FAILOVER_TIMEOUT_MS: Final = 5000
#: Longest wait for a process to answer, replicas to sync, or the Sentinels to find each other.
START_TIMEOUT_S: Final = 30.0


@dataclass
class Node:
    """One redis-server process (data node or Sentinel)."""

    port: int
    proc: subprocess.Popen[bytes]

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def alive(self) -> bool:
        return self.proc.poll() is None


@dataclass
class SentinelTopology:
    """A primary, ``replicas`` replicas and ``sentinels`` Sentinels (quorum: a majority of them)."""

    workdir: Path
    replicas: int = 1
    sentinels: int = 3
    db: int = 0
    data: list[Node] = field(default_factory=list)
    watchers: list[Node] = field(default_factory=list)

    @property
    def quorum(self) -> int:
        return self.sentinels // 2 + 1

    @property
    def url(self) -> str:
        """Celery's form: every Sentinel, the DB on the last one."""
        return ";".join(f"sentinel://127.0.0.1:{n.port}" for n in self.watchers) + f"/{self.db}"

    def start(self) -> SentinelTopology:
        self.workdir.mkdir(parents=True, exist_ok=True)
        primary = self._data_node(None)
        self.data = [primary, *(self._data_node(primary.port) for _ in range(self.replicas))]
        for node in self.data:
            wait_for(lambda n=node: redis_answers(f"redis://127.0.0.1:{n.port}/0"), timeout_s=START_TIMEOUT_S)
        self.wait_replicas_in_sync(primary.port, self.replicas)
        self.watchers = [self._sentinel(primary.port) for _ in range(self.sentinels)]
        wait_for(self._sentinels_agree, timeout_s=START_TIMEOUT_S, message="the Sentinels to see each other")
        return self

    def _data_node(self, primary_port: int | None) -> Node:
        port = free_port()
        args = [
            str(server_binary()),
            *("--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"),
            *("--dir", str(self.workdir), "--logfile", str(self.workdir / f"redis-{port}.log")),
        ]
        if primary_port is not None:
            args += ["--replicaof", "127.0.0.1", str(primary_port)]
        return Node(port, subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def _sentinel(self, primary_port: int) -> Node:
        port = free_port()
        config = self.workdir / f"sentinel-{port}.conf"
        config.write_text(
            "\n".join(
                [
                    f"port {port}",
                    "bind 127.0.0.1",
                    f"dir {self.workdir}",
                    f"logfile {self.workdir / f'sentinel-{port}.log'}",
                    f"sentinel monitor {MASTER_NAME} 127.0.0.1 {primary_port} {self.quorum}",
                    f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}",
                    f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}",
                    f"sentinel parallel-syncs {MASTER_NAME} 1",
                    "",
                ]
            )
        )
        proc = subprocess.Popen(
            [str(server_binary()), str(config), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        node = Node(port, proc)
        wait_for(lambda: redis_answers(f"redis://127.0.0.1:{port}/0"), timeout_s=START_TIMEOUT_S)
        return node

    def _sentinels_agree(self) -> bool:
        """Every Sentinel knows the others and the replicas (so a majority can elect a new primary)."""
        for node in self.watchers:
            state = self.sentinel_client(node).sentinel_master(MASTER_NAME)
            if (
                int(state["num-other-sentinels"]) < self.sentinels - 1
                or int(state["num-slaves"]) < self.replicas
            ):
                return False
        return True

    # -- inspection -------------------------------------------------------------------------
    def sentinel_client(self, node: Node) -> redis.Redis:
        return redis.Redis(*node.address, decode_responses=True, socket_timeout=2)

    def primary_port(self) -> int:
        """The primary's port as the Sentinels report it (any one that answers)."""
        for node in self.watchers:
            if node.alive():
                _, port = self.sentinel_client(node).sentinel_get_master_addr_by_name(MASTER_NAME)
                return int(port)
        raise AssertionError("no Sentinel answers")

    def node(self, port: int) -> Node:
        (found,) = [n for n in self.data if n.port == port]
        return found

    def client(self, port: int) -> redis.Redis:
        return redis.Redis("127.0.0.1", port, decode_responses=True, socket_timeout=5)

    def wait_replicas_in_sync(self, primary_port: int, count: int) -> None:
        def in_sync() -> bool:
            info = self.client(primary_port).info("replication")
            online = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
            return sum(1 for v in online if v.get("state") == "online") >= count

        wait_for(in_sync, timeout_s=START_TIMEOUT_S, message=f"{count} replicas to sync")

    # -- faults -----------------------------------------------------------------------------
    def kill_primary(self) -> int:
        """SIGKILL the primary (no goodbye to anyone); returns its port."""
        port = self.primary_port()
        node = self.node(port)
        node.proc.send_signal(signal.SIGKILL)
        node.proc.wait(timeout=10)
        return port

    def wait_promoted(self, old_port: int, *, timeout_s: float = 60.0) -> int:
        """Wait until every live Sentinel reports a new, healthy primary (what redis-py's discovery
        accepts) that says it is one; returns its port."""

        def promoted() -> bool:
            states = [
                self.sentinel_client(n).sentinel_master(MASTER_NAME) for n in self.watchers if n.alive()
            ]
            ports = {int(state["port"]) for state in states}
            if len(ports) != 1 or old_port in ports:
                return False
            if any(not s["is_master"] or s["is_sdown"] or s["is_odown"] for s in states):
                return False
            return bool(self.client(ports.pop()).info("replication").get("role") == "master")

        wait_for(promoted, timeout_s=timeout_s, interval_s=0.1, message="a replica promoted by the Sentinels")
        return self.primary_port()

    def restart_as_replica(self, old_port: int) -> None:
        """Start the killed node again on its port, empty, as a replica of the new primary (what an
        orchestrator restarting the pod does); the Sentinels then count it as a replica again."""
        primary = self.primary_port()
        args = [
            str(server_binary()),
            *("--bind", "127.0.0.1", "--port", str(old_port), "--save", "", "--appendonly", "no"),
            *("--dir", str(self.workdir), "--logfile", str(self.workdir / f"redis-{old_port}-again.log")),
            *("--replicaof", "127.0.0.1", str(primary)),
        ]
        self.data = [n for n in self.data if n.port != old_port]
        self.data.append(
            Node(old_port, subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        )
        self.wait_replicas_in_sync(primary, self.replicas)

    # -- lifetime ---------------------------------------------------------------------------
    def stop(self) -> None:
        for node in [*self.watchers, *self.data]:
            if node.alive():
                node.proc.terminate()
                try:
                    node.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    node.proc.kill()
                    node.proc.wait()

    def __enter__(self) -> SentinelTopology:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
