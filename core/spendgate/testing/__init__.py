"""Test doubles shared by the test suites and demos (not used by the proxy or the operator at run time)."""
