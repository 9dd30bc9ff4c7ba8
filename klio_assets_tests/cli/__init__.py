"""Tests of the klio-assets command line, each command in its own process."""
