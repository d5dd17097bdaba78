"""Apple target (Core ML ``.mlpackage``): see README.txt."""

from edgecc.targets.apple.target import AppleOptions, AppleTarget

__all__ = ["AppleOptions", "AppleTarget"]
