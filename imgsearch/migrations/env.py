"""Alembic environment: programmatic only (see imgsearch.store.db.alembic_config).

The caller passes an open SQLAlchemy connection in ``config.attributes["connection"]``;
the whole upgrade runs in one transaction on it (the store's engine emits real BEGINs,
so SQLite DDL is transactional). ``sqlalchemy.url`` is honoured as a fallback so the
``alembic`` CLI works with ``-x``-less ad-hoc configs too.
"""
from alembic import context

from imgsearch.store.db import include_name  # autogenerate ignores the FTS5 tables
from imgsearch.store.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
        include_name=include_name,
    )
    with context.begin_transaction():
        context.run_migrations()


def _run(connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True,
                      include_name=include_name)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from imgsearch.store.db import make_engine

    url = config.get_main_option("sqlalchemy.url")
    engine = make_engine(url.removeprefix("sqlite:///"))
    try:
        with engine.connect() as conn:
            _run(conn)
            if conn.in_transaction():
                conn.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
