#!/bin/sh
# Backups of the two databases for the Compose stack's `backup` service (postgres:15-alpine,
# which brings pg_dump, pg_restore and psql). POSIX sh: the image's shell is BusyBox's.
#
#   backup.sh schedule        every BACKUP_INTERVAL, a backup of each database (the service)
#   backup.sh backup-now      one backup of each database, now
#   backup.sh list            the backups kept, oldest first
#   backup.sh restore FILE... each file into its database (FILE: a name in /backups or a path)
#   backup.sh restore latest  the newest backup of each database
#   backup.sh health          the healthcheck: the last scheduled backups succeeded
#
# A backup is `pg_dump -Fc` (compressed, restorable with pg_restore) written to
# /backups/<database>-<UTC timestamp>.dump, e.g. orders-20261202T031500Z.dump, through a
# temporary name, so a file with that name is always complete. The newest BACKUP_KEEP of each
# database are kept. From the host: docs/operations.md, section "Backups".
set -eu

BACKUP_DIR=${BACKUP_DIR:-/backups}
BACKUP_INTERVAL=${BACKUP_INTERVAL:-24h}
BACKUP_KEEP=${BACKUP_KEEP:-7}
STATUS_FILE=/tmp/backup-status

log() { printf '%s backup: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*"; }
die() {
  printf 'backup: error: %s\n' "$*" >&2
  exit 1
}

# BACKUP_INTERVAL as seconds: a number with an optional unit s, m, h or d.
interval_seconds() {
  case $BACKUP_INTERVAL in
    '' | *[!0-9smhd]* | [smhd]* | *[smhd]?*)
      die "BACKUP_INTERVAL=\"$BACKUP_INTERVAL\" is not valid: expected a number with an optional unit s, m, h or d (e.g. 24h)"
      ;;
  esac
  number=${BACKUP_INTERVAL%[smhd]}
  case $BACKUP_INTERVAL in
    *m) echo $((number * 60)) ;;
    *h) echo $((number * 3600)) ;;
    *d) echo $((number * 86400)) ;;
    *) echo "$number" ;;
  esac
}

check_keep() {
  case $BACKUP_KEEP in
    '' | *[!0-9]* | 0) die "BACKUP_KEEP=\"$BACKUP_KEEP\" is not valid: expected a whole number of backups, at least 1" ;;
  esac
}

# The databases, as the names of their variable prefixes.
DATABASES="INVENTORY BILLING"

# use PREFIX: sets the libpq variables (PGHOST, ...) and $db for that database.
db=""
use() {
  eval "PGHOST=\${$1_DB_HOST:?$1_DB_HOST is not set}"
  eval "PGPORT=\${$1_DB_PORT:-5432}"
  eval "PGUSER=\${$1_DB_USER:?$1_DB_USER is not set}"
  eval "PGPASSWORD=\${$1_DB_PASSWORD:?$1_DB_PASSWORD is not set}"
  eval "db=\${$1_DB_NAME:?$1_DB_NAME is not set}"
  PGDATABASE=$db
  export PGHOST PGPORT PGUSER PGPASSWORD PGDATABASE
}

# prefix_of DATABASE: the prefix whose database has that name.
prefix_of() {
  for prefix in $DATABASES; do
    use "$prefix"
    if [ "$db" = "$1" ]; then
      echo "$prefix"
      return 0
    fi
  done
  return 1
}

# backups_of DATABASE: its backups, oldest first (the names sort by time).
backups_of() {
  for file in "$BACKUP_DIR/$1"-[0-9]*T[0-9]*Z.dump; do
    [ -f "$file" ] && echo "$file"
  done | sort
}

# backup_one PREFIX: dumps that database, then drops the oldest beyond BACKUP_KEEP.
backup_one() {
  use "$1"
  stamp=$(date -u +%Y%m%dT%H%M%SZ)
  # Two backups within one second: the second waits for a name of its own.
  while [ -e "$BACKUP_DIR/$db-$stamp.dump" ]; do
    sleep 1
    stamp=$(date -u +%Y%m%dT%H%M%SZ)
  done
  file="$BACKUP_DIR/$db-$stamp.dump"
  partial="$BACKUP_DIR/.$db-$stamp.dump.partial"
  started=$(date +%s)
  if ! pg_dump --format=custom --file="$partial" "$db"; then
    rm -f "$partial"
    log "FAILED: pg_dump of $db from $PGHOST"
    return 1
  fi
  mv "$partial" "$file"
  log "$db: $file ($(wc -c <"$file") bytes, $(($(date +%s) - started)) s)"
  backups_of "$db" | awk -v keep="$BACKUP_KEEP" '{ name[NR] = $0 } END { for (i = 1; i <= NR - keep; i++) print name[i] }' |
    while read -r old; do
      rm -f "$old"
      log "$db: removed $old (BACKUP_KEEP=$BACKUP_KEEP)"
    done
}

# backup_all: every database; fails if any failed, after trying them all.
backup_all() {
  failed=""
  for prefix in $DATABASES; do
    backup_one "$prefix" || failed="$failed $prefix"
  done
  [ -z "$failed" ]
}

# Seconds since the newest backup of the database that was backed up longest ago (a large
# number when one has none yet).
oldest_newest_age() {
  now=$(date +%s)
  age=0
  for prefix in $DATABASES; do
    use "$prefix"
    newest=$(backups_of "$db" | tail -n 1)
    if [ -z "$newest" ]; then
      echo 999999999
      return
    fi
    this=$((now - $(stat -c %Y "$newest")))
    [ "$this" -gt "$age" ] && age=$this
  done
  echo "$age"
}

schedule() {
  interval=$(interval_seconds)
  check_keep
  # Stop at once on docker compose stop (the shell is PID 1: no default handler).
  trap 'log "stopping"; exit 0' TERM INT
  log "every $BACKUP_INTERVAL, keeping $BACKUP_KEEP per database, in $BACKUP_DIR"
  while :; do
    # After a restart, the next backup is due one interval after the last one, not at once.
    age=$(oldest_newest_age)
    if [ "$age" -lt "$interval" ]; then
      wait_for=$((interval - age))
      log "next backup in $wait_for s"
      sleep "$wait_for" &
      wait $! || true
    fi
    if backup_all; then
      echo ok >"$STATUS_FILE"
    else
      echo "failed at $(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$STATUS_FILE"
      # Tried again one interval later; the healthcheck reports it meanwhile. Sleeping here
      # keeps a failing database from being retried in a tight loop.
      sleep "$interval" &
      wait $! || true
    fi
  done
}

health() {
  if [ -f "$STATUS_FILE" ]; then
    grep -q '^ok$' "$STATUS_FILE"
  else
    # None taken since this container started: fine while the last ones are recent.
    [ "$(oldest_newest_age)" -lt "$((2 * $(interval_seconds)))" ]
  fi
}

list() {
  found=""
  for prefix in $DATABASES; do
    use "$prefix"
    for file in $(backups_of "$db"); do
      found=1
      printf '%s\t%s bytes\n' "$(basename "$file")" "$(wc -c <"$file")"
    done
  done
  [ -n "$found" ] || echo "no backups in $BACKUP_DIR"
}

# restore_one FILE: replaces the objects of the backup's database with those of the backup.
restore_one() {
  file=$1
  case $file in
    /*) ;;
    *) file="$BACKUP_DIR/$file" ;;
  esac
  [ -f "$file" ] || die "$1: no such backup (see: list)"
  name=$(basename "$file")
  database=${name%-[0-9]*T[0-9]*Z.dump}
  [ "$database" != "$name" ] || die "$name: not a backup name (<database>-<UTC timestamp>.dump)"
  prefix=$(prefix_of "$database") || die "$name: $database is neither $INVENTORY_DB_NAME nor $BILLING_DB_NAME"
  use "$prefix"
  # A service still connected would write while the tables are replaced, and its writes
  # would be lost or fail: it must be stopped first.
  others=$(psql -qAt -c "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
  if [ "$others" != 0 ]; then
    case $db in
      "$BILLING_DB_NAME") service=billing-app ;;
      *) service=inventory-app ;;
    esac
    die "$others other connection(s) to $db: stop the service first (docker compose stop $service), then restore again"
  fi
  log "restoring $db from $name"
  # One transaction: either the whole backup is in place, or nothing changed.
  pg_restore --clean --if-exists --no-owner --no-privileges --single-transaction \
    --exit-on-error --dbname="$db" "$file"
  case $db in
    "$BILLING_DB_NAME") count="$(psql -qAt -c 'SELECT count(*) FROM orders') orders" ;;
    *) count="$(psql -qAt -c 'SELECT count(*) FROM movies') movies" ;;
  esac
  log "restored $db from $name: $count"
}

restore() {
  [ "$#" -gt 0 ] || die "restore: name a backup (see: list), or: restore latest"
  if [ "$1" = latest ]; then
    set --
    for prefix in $DATABASES; do
      use "$prefix"
      newest=$(backups_of "$db" | tail -n 1)
      [ -n "$newest" ] || die "no backup of $db in $BACKUP_DIR"
      set -- "$@" "$newest"
    done
  fi
  for file in "$@"; do
    restore_one "$file"
  done
}

command=${1:-schedule}
[ "$#" -gt 0 ] && shift
case $command in
  schedule) schedule ;;
  backup-now)
    check_keep
    backup_all
    ;;
  list) list ;;
  restore) restore "$@" ;;
  health) health ;;
  *) die "unknown command \"$command\": expected schedule, backup-now, list, restore FILE... | restore latest, health" ;;
esac
