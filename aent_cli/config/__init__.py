from aent_cli.config.compose import compose_config, project_path
from aent_cli.errors import ConfigError
from aent_cli.config.validate import validate

__all__ = ["ConfigError", "compose_config", "project_path", "validate"]
