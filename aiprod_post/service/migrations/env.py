"""Alembic environment: the URL comes from the caller's Config."""

from alembic import context
from sqlalchemy import engine_from_config, pool

from aiprod_post.service.db import Base

config = context.config
target_metadata = Base.metadata

connectable = engine_from_config(config.get_section(config.config_ini_section) or
                                 {"sqlalchemy.url": config.get_main_option("sqlalchemy.url")},
                                 prefix="sqlalchemy.", poolclass=pool.NullPool)
with connectable.connect() as connection:
    context.configure(connection=connection, target_metadata=target_metadata,
                      render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
