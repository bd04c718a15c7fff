"""What the operations team sees and runs: health and readiness, metrics, alerts sent out,
retention, search terms and the audit trail's checks.
"""
