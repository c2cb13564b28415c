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

#: Provider types, one delivery queue each.
PROVIDER_TYPES: Final = ("cc_partner", "cc_contacts", "whatcounts", "insider", "easytools")


def delivery_queue(provider_type: str) -> str:
    """The Celery queue that carries delivery work for one provider type."""
    return f"{DELIVERY_QUEUE_PREFIX}{provider_type}"


#: Celery queue every worker consumes: control tasks (none carries an opt-out).
CONTROL_QUEUE: Final = "unsub.control"

#: Every Celery queue the system uses. The intake queue is read by the workers' intake loops, not by
#: Celery's consumer (see worker.intake_step).
ALL_QUEUES: Final = (INTAKE_QUEUE, *(delivery_queue(p) for p in PROVIDER_TYPES))
#: The queues Celery's consumers read.
CELERY_QUEUES: Final = (CONTROL_QUEUE, *(delivery_queue(p) for p in PROVIDER_TYPES))
#: Every queue the Celery app declares (tasks may be sent to any of them).
DECLARED_QUEUES: Final = (INTAKE_QUEUE, *CELERY_QUEUES)
