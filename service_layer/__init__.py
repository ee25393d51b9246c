"""The service layer: one module per use case, each deciding and committing through a unit of
work on db/ and core/.

A signal's way from `strategy_client.client.submit_signal` to a fill:
intake -> validation -> conflict_check -> submission -> settlement; beat runs reconciliation
(orders), recovery (stalled orders, claims, start-up) and position_check (positions).
"""
