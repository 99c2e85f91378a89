"""Monitoring of unseen data: predictions, drift, estimated and realized performance, summary.

One module per asset family; the monitoring job and schedule live with the other automation.
"""

from mlops_assets.monitoring.drift import drift_report
from mlops_assets.monitoring.performance import performance, performance_estimate
from mlops_assets.monitoring.predictions import predictions
from mlops_assets.monitoring.summary import monitoring_summary

monitoring_assets = [
    predictions,
    drift_report,
    performance_estimate,
    performance,
    monitoring_summary,
]

__all__ = [
    "drift_report",
    "monitoring_assets",
    "monitoring_summary",
    "performance",
    "performance_estimate",
    "predictions",
]
