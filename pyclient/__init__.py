"""OmniCare shared core.

Every rule that the server (CPython) and the browser (Pyodide) must agree on
lives here exactly once. The core does no I/O of its own: clocks, randomness,
keys and storage are passed in (sans-IO, like h11). Adapters for real I/O live
in :mod:`pyclient.adapters`.
"""

__version__ = "0.1.0"
