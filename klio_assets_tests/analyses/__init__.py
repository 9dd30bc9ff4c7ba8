"""Tests of the built-in analyses against synthetic truth and reference implementations."""
