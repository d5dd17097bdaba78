"""A numpy interpreter of the Core ML MIL ops edgecc emits (runs a saved ``.mlpackage`` on Linux)."""
