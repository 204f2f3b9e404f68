"""The SQL store: ORM models, engine and sessions, and schema migrations."""
