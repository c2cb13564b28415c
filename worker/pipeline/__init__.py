"""The delivery pipeline: intake, durable per-connection buffers, delivery, retries, dead letters.

Every function here is plain Python over a Redis client; the Celery tasks in ``worker.tasks`` and the
scheduler are thin shells around them.
"""
