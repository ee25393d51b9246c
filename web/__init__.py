"""Arbiter's web service: the JSON API under /api/v1, the event stream, metrics, sign-in,
and (in web/dashboard) the dashboard pages. Build it with `web.app.create_app`."""
