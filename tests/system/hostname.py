"""``[core] hostname_callable`` of the distributed scenarios: each Celery worker names itself.

Both workers run on this one machine, so ``socket.getfqdn()`` would give them one name; ``SYSTEST_HOSTNAME`` (set in
a worker's environment by the harness) tells them apart in the task instances' ``hostname``.
"""

from __future__ import annotations

import os
import socket


def worker_hostname() -> str:
    return os.environ.get("SYSTEST_HOSTNAME") or socket.getfqdn()
