"""Simulators of hosted mail APIs that cannot run here, written from their public references.

`GraphSimulator` (Microsoft Graph mail + Microsoft identity platform token endpoint)
and `GmailSimulator` (Gmail API + Google OAuth token endpoint) each serve HTTP and an
inbound SMTP listener on 127.0.0.1; see their modules for what is and is not simulated.
"""

from .gmail import GmailSimulator, google_error
from .graph import (
    GraphSimulator,
    extended_header_id,
    self_signed_certificate,
    thumbprint_headers,
)

__all__ = [
    "GmailSimulator",
    "GraphSimulator",
    "extended_header_id",
    "google_error",
    "self_signed_certificate",
    "thumbprint_headers",
]
