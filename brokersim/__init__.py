"""A brokerage simulator speaking the subset of Alpaca's Trading API v2 that Arbiter uses (the
README's "The brokerage simulator" lists what is supported).

Modules: config (settings), prices (seeded reference prices), ledger (pure bookkeeping),
records (tables, rows), store (SQLite), fillbook (fills, positions), contingent (legs, OCO),
specs (order requests), builder (orders, legs, replacements), triggers (stops, trailing),
engine (fills), faults (knobs), validate (input), wire (Alpaca JSON), routes (/v2 trading),
marketdata (/v2/stocks latest trade/quote), stream (/stream trade_updates websocket),
admin (/admin), app (ASGI), server (uvicorn), cli (Typer)."""
