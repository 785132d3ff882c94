"""Errors shared by the configs (kept apart so config modules can import each other's models)."""


class ConfigError(ValueError):
    """A YAML config that cannot run; the message names the file and the field."""
