"""Services: the model servers ``keel deploy start`` asks for and ``keel worker`` runs.

One row per deployment that is (or was) started: how many replicas on which
ports, the desired state (``running`` or ``stopped``), and the worker that holds
it (``owner`` with a lease it renews; another worker takes over once it expires).
``replicas`` is JSON written by the owner only: per replica its port, pid, state
(starting | running | backoff | failed | stopped), restarts, the last error (the
child's exit status and last output line) and its log file.
"""

from sqlalchemy import BigInteger, Column, Integer, String, Table, Text

from keel.store.schema._base import metadata

services = Table(
    "services",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(255), nullable=False, unique=True),  # the deployment's name
    Column("replicas", Integer, nullable=False),
    Column("host", String(255), nullable=False),
    Column("ports", Text, nullable=False),  # JSON list, one per replica
    Column("desired", String(16), nullable=False),  # running | stopped
    Column("owner", String(255), nullable=True),  # the worker that runs it
    Column("lease_expires_ms", BigInteger, nullable=True),
    Column("replica_state", Text, nullable=True),  # JSON list, one per replica (see above)
    Column("requested_by", String(255), nullable=False),
    Column("requested_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
)
