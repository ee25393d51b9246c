"""The strategy-side API: send signals (`client`), follow events (`subscriber`), publish
events of your own (`external_events`). Imports no worker code; needs Redis (and Postgres
for the durable history)."""
