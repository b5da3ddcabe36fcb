"""LiteLLM's proxy configured to run standalone against the mock upstream (no DB, no telemetry).

Every `claude-*` model the client names goes to `anthropic/<model>` at the mock; the master key
authenticates the client. Spend logs, error logs and the uvicorn access log are off, as they are
for the other gateways; everything else is LiteLLM's default.
"""

from __future__ import annotations

from typing import Any

import yaml


def litellm_config(upstream: str, upstream_key: str, master_key: str) -> str:
    config = {
        "model_list": [{"model_name": "*",
                        "litellm_params": {"model": "anthropic/*", "api_base": upstream, "api_key": upstream_key}}],
        "litellm_settings": {"telemetry": False, "turn_off_message_logging": True, "set_verbose": False},
        "general_settings": {"master_key": master_key, "disable_spend_logs": True, "disable_error_logs": True,
                             "disable_adding_master_key_hash_to_db": True},
    }
    return yaml.safe_dump(config, sort_keys=False)


QUIET_UVICORN_LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"default": {"format": "%(levelname)s %(name)s: %(message)s"}},
    "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "default", "stream": "ext://sys.stderr"}},
    "loggers": {"uvicorn": {"handlers": ["default"], "level": "WARNING"},
                "uvicorn.error": {"level": "WARNING"},
                "uvicorn.access": {"handlers": ["default"], "level": "WARNING", "propagate": False}},
}
