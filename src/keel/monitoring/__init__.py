"""Monitoring: drift against stored baselines, delayed labels and performance, monitors and alerts.

- :mod:`~keel.monitoring.drift` the drift engine (``keel.drift``), over :mod:`~keel.monitoring.stats`;
- :mod:`~keel.monitoring.reference` and :mod:`~keel.monitoring.thresholds`: a reference fitted once,
  thresholds learned from its chunks;
- :mod:`~keel.monitoring.baselines`: fitted references stored per model version;
- :mod:`~keel.monitoring.feedback` and :mod:`~keel.monitoring.performance`: labels, realized and
  estimated performance;
- :mod:`~keel.monitoring.monitors` and :mod:`~keel.monitoring.alerts`.
"""

from keel.monitoring.baselines import subscribe_to_registry as _subscribe

_subscribe()  # registered versions get a baseline (monitoring registers itself with the registry)
