"""Tests of the render job (data_prep)."""
