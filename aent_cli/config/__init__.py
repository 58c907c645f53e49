from aent_cli.config.compose import ConfigError, compose_config, project_path
from aent_cli.config.validate import validate

__all__ = ["ConfigError", "compose_config", "project_path", "validate"]
