"""Tests of edgecc's frontends (model importers), mirroring ``edgecc/``."""
