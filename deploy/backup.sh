#!/bin/sh
# One Postgres backup: a custom-format pg_dump (compressed, restorable table by table with
# pg_restore) written to BACKUP_DIR, checked readable, then the oldest dumps beyond
# BACKUP_KEEP removed. The compose `backup` service runs it on a schedule; run it by hand
# the same way. Prints the dump's path.
#
# Connection: libpq's variables (PGHOST, PGPORT, PGUSER, PGDATABASE); the password from
# PGPASSWORD_FILE (a compose secret) or PGPASSWORD.
#   BACKUP_DIR   where dumps go (default /backups)
#   BACKUP_KEEP  how many dumps to keep, newest first (default 14)
set -eu

: "${PGDATABASE:?set PGDATABASE}"
dir=${BACKUP_DIR:-/backups}
keep=${BACKUP_KEEP:-14}
case $keep in
  '' | *[!0-9]* | 0) echo "backup.sh: BACKUP_KEEP must be a whole number of at least 1" >&2; exit 2 ;;
esac
if [ -n "${PGPASSWORD_FILE:-}" ]; then
  PGPASSWORD=$(cat "$PGPASSWORD_FILE")
  export PGPASSWORD
fi

mkdir -p "$dir"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
dump="$dir/$PGDATABASE-$stamp.dump"
partial="$dir/.$PGDATABASE-$stamp.dump.partial"
# A dump is renamed into place only once pg_dump finished and pg_restore can read its table
# of contents, so a crash or a full disk never leaves a file that looks like a backup.
trap 'rm -f "$partial"' EXIT
pg_dump --format=custom --compress=6 --file="$partial"
pg_restore --list "$partial" >/dev/null
chmod 600 "$partial"
mv "$partial" "$dump"
trap - EXIT

# Timestamps sort by name: keep the newest $keep of this database's dumps.
find "$dir" -maxdepth 1 -type f -name "$PGDATABASE-*.dump" | sort -r | tail -n "+$((keep + 1))" |
  while IFS= read -r old; do rm -f -- "$old"; done

echo "$dump"
