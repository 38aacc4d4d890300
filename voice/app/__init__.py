"""The ASGI app: :func:`create_app`, the routes of each transport, the page, health,
readiness and metrics, and the one admission path every call enters through."""

from voice.app.factory import create_app

__all__ = ["create_app"]
