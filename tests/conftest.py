"""Test plugins: real services (local when reachable, embedded otherwise), a migrated database
per run, the brokerage simulator, and real Celery worker/beat processes."""

pytest_plugins = [
    "tests.fixtures.services",
    "tests.fixtures.database",
    "tests.fixtures.simulator",
    "tests.fixtures.processes",
    "tests.fixtures.receiver",
    "tests.fixtures.web",
]
