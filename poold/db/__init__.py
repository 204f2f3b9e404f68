"""The SQL store: ORM models, engine and sessions, and schema migrations."""


class SchemaError(RuntimeError):
    """The database schema is not the one this code needs."""


class StoreError(RuntimeError):
    """The store cannot be opened: a database URL that does not parse, a driver that is not
    installed, or a server that does not answer. The message is one line, password hidden."""
