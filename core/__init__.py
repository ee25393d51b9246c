"""Arbiter's domain: states, events, rules and interfaces. Pure: no I/O, no frameworks."""
