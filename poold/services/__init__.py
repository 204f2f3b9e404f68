"""The pool's decisions as plain functions over a session: what routes and the CLI call."""


class ServiceError(Exception):
    """A request the pool refuses; ``status`` is the HTTP status it maps to, ``field`` the
    request field it is about (dotted, as in a 422's ``errors[].field``), when there is one."""

    status = 400

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field


class Unauthorized(ServiceError):
    """No token, or one that is not (or no longer) valid."""

    status = 401


class NotFound(ServiceError):
    status = 404


class Conflict(ServiceError):
    status = 409


class Invalid(ServiceError):
    status = 422


class Forbidden(ServiceError):
    status = 403


class TooLarge(ServiceError):
    status = 413
