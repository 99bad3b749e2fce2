"""The demo: the whole pipeline end to end (`python -m demo`, `make demo`) and its tiny model (python -m demo.tiny)."""
