"""Tests of klio-assets."""
