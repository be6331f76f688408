"""The one exception root of the domain: services, selectors and views just raise.

No HTTP framework here: an error carries its status, code, message, details and
headers, and the API layer (chat.api.errors) renders it as the envelope of API.md.
"""


class ApiError(Exception):
    """The root of every error a view or service raises on purpose."""

    status = 400
    code = "VALIDATION_ERROR"
    message = "Invalid request"

    def __init__(self, message: str | None = None, *, details=None, headers: dict | None = None):
        super().__init__(message or self.message)
        self.message = message or self.message
        self.details = details
        self.headers = headers or {}


class Unauthenticated(ApiError):
    status, code, message = 401, "UNAUTHENTICATED", "Authentication credentials were not provided."


class Forbidden(ApiError):
    status, code, message = 403, "FORBIDDEN", "You do not have permission to do this"


class NotFound(ApiError):
    status, code, message = 404, "NOT_FOUND", "Not found"


class MethodNotAllowed(ApiError):
    status, code, message = 405, "METHOD_NOT_ALLOWED", "Method not allowed"


class Conflict(ApiError):
    status, code, message = 409, "CONFLICT", "Conflicts with the stored data"


class PayloadTooLarge(ApiError):
    status, code, message = 413, "PAYLOAD_TOO_LARGE", "Request body is too large"


class RateLimitExceeded(ApiError):
    status, code, message = 429, "RATE_LIMIT_EXCEEDED", "Rate limit exceeded"


class InternalError(ApiError):
    status, code, message = 500, "INTERNAL_ERROR", "Internal server error"


class ServiceUnavailable(ApiError):
    status, code, message = 503, "SERVICE_UNAVAILABLE", "Service temporarily unavailable"
