"""The command line: ``python -m server ...``."""
