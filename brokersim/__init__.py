"""A brokerage simulator speaking the subset of Alpaca's Trading API v2 that Arbiter uses.

Modules: config (settings), prices (seeded reference prices), ledger (pure bookkeeping),
store (SQLite), engine (fills), faults (knobs), validate (input), wire (Alpaca JSON),
routes (/v2), admin (/admin), app (ASGI), server (uvicorn), cli (Typer)."""
