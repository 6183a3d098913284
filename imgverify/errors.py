"""Typed errors: every input problem has a `kind` that batch output and exit codes can rely on."""

from __future__ import annotations


class ImgVerifyError(Exception):
    """Base class; `kind` is a stable machine-readable label used in JSON output."""

    kind = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "message": self.message}


class InputError(ImgVerifyError):
    """The submitted input cannot be checked (the archive and the run are fine)."""

    kind = "input_error"


class EmptyInputError(InputError):
    kind = "empty_input"


class NotAnImageError(InputError):
    kind = "not_an_image"


class CorruptImageError(InputError):
    kind = "corrupt_image"


class TruncatedImageError(InputError):
    kind = "truncated_image"


class ImageTooLargeError(InputError):
    kind = "image_too_large"


class InputTimeoutError(InputError):
    kind = "timeout"


class UnsupportedFormatError(InputError):
    kind = "unsupported_format"


class SourceNotFoundError(InputError):
    kind = "not_found"


class FetchError(InputError):
    """A URL could not be fetched safely (timeout, size cap, scheme, status, content type)."""

    kind = "fetch_error"


class UrlRefusedError(FetchError):
    """The URL was refused by policy before any byte was requested from it: it (or a redirect
    hop) leads to a non-public address, or a redirect leaves http/https. Not a network fault:
    retrying will not help; --allow-private-urls does, for a deliberate internal fetch."""

    kind = "url_refused"


class ArchiveError(ImgVerifyError):
    """The reference archive cannot be opened, read or written."""

    kind = "archive_error"


class ManifestError(ImgVerifyError):
    kind = "manifest_error"
