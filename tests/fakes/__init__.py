"""Test doubles shared by the test suite (importable as `tests.fakes`)."""
