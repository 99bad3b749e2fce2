"""Tests of pipeline/layout: the on-disk contracts."""
