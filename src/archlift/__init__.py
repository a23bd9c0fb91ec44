"""archlift: build-and-release toolchain for multi-arch container images."""

__version__ = "0.1.0"
