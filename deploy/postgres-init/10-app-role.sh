#!/bin/sh
# The application's database role: a login that owns nothing (see
# scheduler/appendonly/grants.py). The postgres image runs this once, as the owner
# (POSTGRES_USER), when it initialises an empty data volume; on a deployment that already has
# its data, run it by hand once (README, "Database roles"): it is idempotent, and running it
# again sets the password from the secret file anew. `migrate` then grants the role its
# privileges on the tables.
#
# APP_DB_ROLE (default scheduler_app) names the role; APP_DB_PASSWORD_FILE (default
# /run/secrets/postgres_app_password) holds its password. The password goes to psql on its
# standard input, never on a command line.
set -eu

APP_DB_ROLE="${APP_DB_ROLE:-scheduler_app}"
APP_DB_PASSWORD_FILE="${APP_DB_PASSWORD_FILE:-/run/secrets/postgres_app_password}"
export APP_DB_ROLE APP_DB_PASSWORD_FILE

if [ ! -s "$APP_DB_PASSWORD_FILE" ]; then
    echo "10-app-role.sh: $APP_DB_PASSWORD_FILE is missing or empty" >&2
    exit 1
fi

psql --no-psqlrc --set ON_ERROR_STOP=1 --quiet \
    --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-postgres}" <<'SQL'
\getenv app_role APP_DB_ROLE
-- psql strips the file's trailing newline, as config/settings.py does for the app.
\set app_password `cat "$APP_DB_PASSWORD_FILE"`
SELECT format('CREATE ROLE %I', :'app_role')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'app_role') \gexec
ALTER ROLE :"app_role" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION
    NOBYPASSRLS PASSWORD :'app_password';
SQL
echo "10-app-role.sh: role $APP_DB_ROLE is ready"
