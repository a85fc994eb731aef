"""Fault-injection runs of the whole send pipeline against the sandbox (``pytest -m chaos``)."""
