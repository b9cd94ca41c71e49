#!/bin/sh
# Restore a backup.sh dump into a NEW database, never over an existing one:
#   restore.sh DUMP TARGET_DATABASE
# The target is created here and filled in one transaction (pg_restore --single-transaction
# --exit-on-error): on any error it is dropped again, so a half-restored database never
# exists. Owners, grants and triggers (the audit trail's append-only trigger among them) come
# back as they were. Then the row count of every table is printed, to compare with the source.
# Switching the app over is a separate, deliberate step (see README, "Backups and restore").
#
# Connection: libpq's variables (PGHOST, PGPORT, PGUSER); the password from PGPASSWORD_FILE
# (a compose secret) or PGPASSWORD. The user needs CREATEDB (compose's `scheduler` has it).
set -eu

if [ $# -ne 2 ]; then
  echo "usage: restore.sh DUMP TARGET_DATABASE" >&2
  exit 2
fi
dump=$1
target=$2
if [ -n "${PGPASSWORD_FILE:-}" ]; then
  PGPASSWORD=$(cat "$PGPASSWORD_FILE")
  export PGPASSWORD
fi
# Connect for CREATE DATABASE through the maintenance database, never the target.
export PGDATABASE=postgres

pg_restore --list "$dump" >/dev/null
createdb -- "$target"
if ! pg_restore --dbname="$target" --single-transaction --exit-on-error "$dump"; then
  echo "restore.sh: restore failed; dropping the new database $target" >&2
  dropdb -- "$target"
  exit 1
fi
psql --dbname="$target" --no-psqlrc --tuples-only --no-align --field-separator=' ' --quiet \
  --command="SELECT format('%s.%s %s', n.nspname, c.relname,
       (xpath('/row/n/text()',
              query_to_xml(format('SELECT count(*) AS n FROM %I.%I', n.nspname, c.relname),
                           false, true, '')))[1]::text)
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.relkind IN ('r', 'p')
       AND n.nspname NOT IN ('pg_catalog', 'information_schema')
       AND n.nspname NOT LIKE 'pg_toast%'
     ORDER BY 1"
echo "restored $dump into $target"
