"""The SQL store: ORM models, engine and sessions, and schema migrations."""


class SchemaError(RuntimeError):
    """The database schema is not the one this code needs."""
