"""Every exception the development tools raise, in one tree.

DevToolError                     (a ``worker.errors.UnsubRelayError``)
 ├── DemoDbInUseError            the demo's Redis DB holds data that is not the demo's
 ├── RedisUnavailableError       no Redis answers where the demo was told to run
 ├── EmbeddedRedisError          the embedded Redis could not be started
 ├── ProcessStartError           a worker or scheduler child exited or never became ready
 └── NotSettledError             the local system still held work when a wait ran out
"""

from __future__ import annotations

from worker.errors import UnsubRelayError


class DevToolError(UnsubRelayError):
    """Root of every error the development tools raise."""


class DemoDbInUseError(DevToolError):
    """The demo's DB holds data that is not the demo's: the demo refuses to touch it."""


class RedisUnavailableError(DevToolError):
    """No Redis answers at the URL the demo was given."""


class EmbeddedRedisError(DevToolError):
    """The embedded Redis server could not be started."""


class ProcessStartError(DevToolError):
    """A child process exited or never became ready."""


class NotSettledError(DevToolError):
    """The system still held work when the wait ran out."""
