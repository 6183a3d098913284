"""The HTTP service: a thin skin over `check` and the archive for pipelines in any language.

Importing it needs the `service` extra (FastAPI, uvicorn); without it the ImportError says
`pip install 'imgverify[service]'`.
"""

from __future__ import annotations

from imgverify.service.app import (
    SERVICE_EXTRA_HINT,
    CheckResponse,
    JsonLogFormatter,
    ReferenceAdded,
    ReferenceModel,
    configure_logging,
    create_app,
    is_loopback_host,
    log_safe_url,
    serve,
)

__all__ = ["SERVICE_EXTRA_HINT", "CheckResponse", "JsonLogFormatter", "ReferenceAdded",
           "ReferenceModel", "configure_logging", "create_app", "is_loopback_host",
           "log_safe_url", "serve"]
