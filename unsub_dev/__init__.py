"""Development tools of unsub-relay, installed with the ``dev`` extra and never in the production image:
the provider sandbox (``unsub_dev.sandbox``), a whole local system of workers and scheduler
(``unsub_dev.localstack``) and the demo built on them (``unsub demo``).
"""
