#!/usr/bin/env bash
# Start a throwaway PostgreSQL server on loopback for the service's database tests and
# print the SQLAlchemy URL they take (AIPROD_TEST_POSTGRES_URL). Debian's server is used
# (installed with apt-get where missing); the data folder lives under /tmp and goes away
# with `scripts/ci_postgres.sh stop DIR`.
set -euo pipefail
if [ "${1:-}" = "stop" ]; then
    pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
    su postgres -s /bin/sh -c "$pgbin/pg_ctl -D $2/data -m fast -w stop" >/dev/null 2>&1 || true
    rm -rf "$2"
    exit 0
fi
if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    apt-get install -y -q --no-install-recommends postgresql >/tmp/aiprod-ci-pg-apt.log 2>&1
fi
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
id postgres >/dev/null 2>&1
dir=$(mktemp -d /tmp/aiprod-pg.XXXXXX)
chown postgres "$dir"
# a free port on loopback (two CI runs on one machine must not meet)
port=${AIPROD_CI_PG_PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
su postgres -s /bin/sh -c "$pgbin/initdb -D $dir/data -A trust -U postgres >$dir/initdb.log 2>&1 \
    && $pgbin/pg_ctl -D $dir/data -o '-h 127.0.0.1 -p $port -k $dir' -l $dir/server.log -w start \
    >/dev/null && $pgbin/createdb -h 127.0.0.1 -p $port -U postgres aiprod_test"
echo "postgresql+psycopg://postgres@127.0.0.1:$port/aiprod_test $dir"
