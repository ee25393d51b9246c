"""Adapters that implement core's ports over outside services (the brokerage over alpaca-py)."""
