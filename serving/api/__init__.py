"""The serving HTTP API (FastAPI): ``create_app(settings)``."""

from serving.api.app import create_app

__all__ = ["create_app"]
