"""sdtui: Stable Diffusion in a Docker container, driven from a terminal UI."""

__version__ = "0.1.0"
