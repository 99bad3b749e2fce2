"""Tests of pipeline.evaluate."""
