"""Typed run configuration: YAML files in configs/ loaded onto dataclasses, with CLI overrides."""
from mars_dist.config.loader import (ConfigError, config_to_dict, config_to_yaml, load_config, run_config_from_dict,
                                     save_config)
from mars_dist.config.run import RunConfig

__all__ = ["ConfigError", "RunConfig", "config_to_dict", "config_to_yaml", "load_config", "run_config_from_dict",
           "save_config"]
