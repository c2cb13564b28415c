"""Names shared by producers, workers and the deployment: the wire contract's addresses.

Changing any of these is a breaking change for every publisher and for `deploy/`
(a test checks the manifests against this module).
"""

from __future__ import annotations

from typing import Final

#: Celery task name of the intake task. Publishers send to it by name.
INTAKE_TASK: Final = "unsub.intake"

#: Celery queue (a Redis list of that name) that the intake task consumes.
INTAKE_QUEUE: Final = "unsub.intake"

#: Redis stream for language-neutral publishers: XADD a plain JSON message, no Celery envelope.
NATIVE_INTAKE_STREAM: Final = "unsub:intake:json"

#: Field of a native-intake stream entry that holds the JSON message (one object or an array).
NATIVE_INTAKE_FIELD: Final = "message"

#: Prefix of the per-provider-type delivery queues, e.g. ``unsub.deliver.whatcounts``.
DELIVERY_QUEUE_PREFIX: Final = "unsub.deliver."


def delivery_queue(provider_type: str) -> str:
    """The Celery queue that carries delivery work for one provider type."""
    return f"{DELIVERY_QUEUE_PREFIX}{provider_type}"


#: Celery queue every worker consumes: control tasks (none carries an opt-out). The delivery queues,
#: one per provider type, come from the workers' provider registry (``worker.providers``).
CONTROL_QUEUE: Final = "unsub.control"
