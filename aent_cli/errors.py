"""Errors that mean "the user's input is wrong": the CLI prints them as one line and exits 2."""


class UserError(Exception):
    """Bad input (config values, data files, paths, model answers) detected before expensive work."""


class ConfigError(UserError, ValueError):
    """A bad config value or Hydra override."""


class DataError(UserError, ValueError):
    """A malformed data file: the message starts with `file:line:`."""
