"""Pure logic: money, windows, decisions. No I/O, no clock, no network: every function takes what it
needs (a bundle, spend figures, `now`) and returns a value, so the proxy, the operator and the
offline tools (dry-run, chargeback) share it and tests need no cluster. A test keeps the boundary
(tests/unit/test_layout.py)."""
