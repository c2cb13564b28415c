"""Provider sandbox: faithful local fakes of the five provider operations, with state and faults.

One ASGI app (:mod:`unsub_dev.sandbox.app`) serves Constant Contact partner and contacts (``/cc``),
WhatCounts (``/whatcounts``), Insider (``/insider``) and easy.tools (``/easytools``), plus the
``/_sandbox`` control API. :class:`unsub_dev.sandbox.server.SandboxServer` runs it on a free port for
tests; ``unsub sandbox`` runs it on 8025. See docs/sandbox.md.
"""
