"""Tests of pipeline.registry."""
