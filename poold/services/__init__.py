"""The pool's decisions as plain functions over a session: what routes and the CLI call."""


class ServiceError(Exception):
    """A request the pool refuses; ``status`` is the HTTP status it maps to."""

    status = 400

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class NotFound(ServiceError):
    status = 404


class Conflict(ServiceError):
    status = 409


class Invalid(ServiceError):
    status = 422
