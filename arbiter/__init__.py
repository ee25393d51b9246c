"""The `arbiter` command line and the process supervision behind `arbiter up` and `demo`."""
