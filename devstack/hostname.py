"""The host name Airflow records for a task instance (``[core] hostname_callable``).

The local stack runs its Celery workers on one machine; each gets ``IEP_WORKER_HOSTNAME`` (``worker-1``,
``worker-2``, ...) so that a task instance's ``hostname`` says which worker ran it, as it would with one
worker per machine. Elsewhere this is the machine's name, as with Airflow's default.
"""

from __future__ import annotations

import os
import socket

WORKER_HOSTNAME_ENV = "IEP_WORKER_HOSTNAME"


def hostname() -> str:
    return os.environ.get(WORKER_HOSTNAME_ENV) or socket.getfqdn()
