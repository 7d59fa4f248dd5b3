#!/bin/sh
# The backup daemon of the postgres-backup Deployment, mounted at /scripts/backup.sh.
#
#   sh /scripts/backup.sh loop     dump now, then every BACKUP_INTERVAL_SECONDS (default 1800)
#   sh /scripts/backup.sh once     one dump, then retention
#   sh /scripts/backup.sh prune    retention only
#   sh /scripts/backup.sh health   exit 0 while the loop's heartbeat is fresh (the probes)
#
# A dump goes to BACKUP_DIR/continuous-YYYYMMDD-HHMMSS.sql.part and is renamed to its final
# name only after pg_dump succeeded and wrote its end marker; its sha256sum-format sidecar
# (X.sha256) is in place before the rename. Retention keeps the KEEP (default 10) newest of
# the daemon's OWN dumps (PREFIX-YYYYMMDD-HHMMSS.sql or .sql.age, newest by the time in the
# name, each with its sidecar): a backup uploaded with `inv backup.to-daemon` (any other
# name) is never pruned here, only on purpose with `inv backup.prune`. *.part files are never touched. A
# failed run deletes nothing but its own .part. One log line per run.
#
# Encryption: when BACKUP_RECIPIENTS_FILE (default /etc/backup-recipients/recipients.txt,
# the ConfigMap backup-recipients) lists any age public key, pg_dump's output goes straight
# through `age -R` (Debian's age package, in the daemon's image): the dump is
# continuous-YYYYMMDD-HHMMSS.sql.age, ciphertext from its first byte (the .part too), and
# its sidecar holds the ciphertext's sha256. The daemon never holds a key that decrypts;
# `inv backup.restore --from-daemon` decrypts on the operator's machine. Without age in the
# image, or with a bad key in the file, the daemon stops at start (exit 2) instead of
# writing plaintext.
#
# libpq reads PGHOST, PGPORT, PGUSER, PGPASSWORD and PGDATABASE from the environment.
# POSIX sh only (dash, busybox): the image decides which shell runs this.

set -u

BACKUP_DIR=${BACKUP_DIR:-/backups}
KEEP=${KEEP:-10}
BACKUP_INTERVAL_SECONDS=${BACKUP_INTERVAL_SECONDS:-1800}
PREFIX=${BACKUP_PREFIX:-continuous}
RECIPIENTS_FILE=${BACKUP_RECIPIENTS_FILE:-/etc/backup-recipients/recipients.txt}
HEARTBEAT_FILE=${HEARTBEAT_FILE:-${TMPDIR:-/tmp}/postgres-backup.heartbeat}
# The heartbeat may be as old as a whole interval plus a long dump.
HEALTH_MAX_AGE_SECONDS=${HEALTH_MAX_AGE_SECONDS:-}

part=""
sidecar_part=""
worker=""

log() {
    printf '%s backup %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*"
}

fail_config() {
    log "error $*"
    exit 2
}

whole_number() {
    case $2 in
        '' | *[!0-9]*) fail_config "$1=$2 is not a whole number" ;;
    esac
}

# Whether RECIPIENTS_FILE lists any key (a line that is neither empty nor a # comment).
encrypting() {
    [ -f "$RECIPIENTS_FILE" ] && grep -q '^[[:space:]]*[^#[:space:]]' "$RECIPIENTS_FILE"
}

# Before any dump: recipients listed means age must be there and accept every key.
check_encryption() {
    encrypting || return 0
    command -v age >/dev/null 2>&1 \
        || fail_config "$RECIPIENTS_FILE lists recipients but this image has no age (Debian package age)"
    problem=$(age -R "$RECIPIENTS_FILE" -o /dev/null </dev/null 2>&1) \
        || fail_config "age refuses $RECIPIENTS_FILE: $(printf '%s' "$problem" | head -n 1 | tr -d '"')"
}

cleanup() {
    if [ -n "$worker" ]; then
        kill "$worker" 2>/dev/null
        worker=""
    fi
    if [ -n "$part" ]; then
        rm -f -- "$part"
    fi
    if [ -n "$sidecar_part" ]; then
        rm -f -- "$sidecar_part"
    fi
    part=""
    sidecar_part=""
}

# Deletes all but the KEEP newest of this daemon's own dumps; prints how many it kept and
# deleted. Newest by name: the name holds the dump's time (UTC), an mtime can be anything.
prune() {
    kept=0
    deleted=0
    listing=$(cd "$BACKUP_DIR" \
        && ls -1 -- "$PREFIX"-[0-9]*-[0-9]*.sql "$PREFIX"-[0-9]*-[0-9]*.sql.age 2>/dev/null \
        | sort -r)
    saved_ifs=$IFS
    IFS='
'
    set -f
    for name in $listing; do
        [ -f "$BACKUP_DIR/$name" ] || continue
        if [ "$kept" -lt "$KEEP" ]; then
            kept=$((kept + 1))
        elif rm -f -- "$BACKUP_DIR/$name" "$BACKUP_DIR/$name.sha256"; then
            deleted=$((deleted + 1))
        fi
    done
    set +f
    IFS=$saved_ifs
    echo "kept=$kept deleted=$deleted"
}

reason_in() {
    # pg_dump's first error line (else its last line), as one quoted-safe log field.
    { grep -m 1 'error' "$1" || tail -n 1 "$1"; } 2>/dev/null | tr -d '"\r' | tr '\t' ' ' \
        | cut -c 1-300
}

run_once() {
    started=$(date +%s)
    name="$PREFIX-$(date -u +%Y%m%d-%H%M%S).sql"
    encrypted=""
    if encrypting; then
        encrypted=yes
        name="$name.age"
    fi
    target="$BACKUP_DIR/$name"
    if [ -e "$target" ]; then
        log "FAILED file=$name reason=\"a backup of that name exists already\" nothing deleted"
        return 1
    fi
    errors="${TMPDIR:-/tmp}/postgres-backup.$$.err"
    part="$target.part"
    sidecar_part="$target.sha256.part"

    # In the background, so that a TERM during a long dump is handled at once.
    # --clean --if-exists: the dump drops what it recreates, so `psql -1 -f` restores it
    # over the live database (as `inv backup.restore` does with its own plain dumps).
    dump_status="${TMPDIR:-/tmp}/postgres-backup.$$.status"
    if [ -n "$encrypted" ]; then
        # POSIX sh has no pipefail: pg_dump's status travels through a file. Only age
        # writes the .part, so no plaintext byte ever reaches the volume.
        rm -f -- "$dump_status"
        {
            pg_dump --no-password --format=plain --clean --if-exists --no-owner 2>"$errors"
            echo $? >"$dump_status"
        } | age -R "$RECIPIENTS_FILE" -o "$part" 2>>"$errors" &
    else
        pg_dump --no-password --format=plain --clean --if-exists --no-owner --file="$part" \
            2>"$errors" &
    fi
    worker=$!
    wait "$worker"
    status=$?
    worker=""
    reason=""
    if [ -n "$encrypted" ]; then
        age_status=$status
        status=$(cat "$dump_status" 2>/dev/null || echo "unknown")
        rm -f -- "$dump_status"
    fi
    if [ "$status" != 0 ]; then
        reason="pg_dump exited $status: $(reason_in "$errors")"
    elif [ -n "$encrypted" ] && [ "$age_status" -ne 0 ]; then
        reason="age exited $age_status: $(reason_in "$errors")"
    elif [ -n "$encrypted" ] \
        && [ "$(head -c 21 "$part" 2>/dev/null)" != "age-encryption.org/v1" ]; then
        reason="age wrote no age file"
    elif [ -z "$encrypted" ] && ! tail -n 5 "$part" | grep -q 'PostgreSQL database dump complete'; then
        reason="the dump has no end marker"
    else
        hash=$(sha256sum "$part" | cut -d ' ' -f 1)
        if [ "${#hash}" -ne 64 ]; then
            reason="sha256sum failed"
        elif ! printf '%s  %s\n' "$hash" "$name" >"$sidecar_part" \
            || ! mv -f -- "$sidecar_part" "$target.sha256"; then
            reason="cannot write $name.sha256"
        elif ! mv -f -- "$part" "$target"; then
            rm -f -- "$target.sha256"
            reason="cannot rename the dump into place"
        fi
    fi
    rm -f -- "$errors"
    if [ -n "$reason" ]; then
        cleanup
        log "FAILED file=$name reason=\"$reason\" seconds=$(($(date +%s) - started)) nothing deleted"
        return 1
    fi
    part=""
    sidecar_part=""
    bytes=$(wc -c <"$target" | tr -d ' ')
    retention=$(prune)
    log "ok file=$name bytes=$bytes sha256=$hash $retention seconds=$(($(date +%s) - started))"
    return 0
}

health() {
    max_age=${HEALTH_MAX_AGE_SECONDS:-$((2 * BACKUP_INTERVAL_SECONDS + 600))}
    whole_number HEALTH_MAX_AGE_SECONDS "$max_age"
    if [ ! -f "$HEARTBEAT_FILE" ]; then
        echo "no heartbeat yet ($HEARTBEAT_FILE)"
        return 1
    fi
    age=$(($(date +%s) - $(date -r "$HEARTBEAT_FILE" +%s)))
    if [ "$age" -gt "$max_age" ]; then
        echo "heartbeat is ${age}s old (limit ${max_age}s)"
        return 1
    fi
    return 0
}

loop() {
    # A .part of this daemon's own names can only be left over from a killed container.
    rm -f -- "$BACKUP_DIR/$PREFIX"-*.part
    check_encryption
    if encrypting; then
        encryption="age recipients=$(grep -c '^[[:space:]]*[^#[:space:]]' "$RECIPIENTS_FILE")"
    else
        encryption=off
    fi
    log "started interval=${BACKUP_INTERVAL_SECONDS}s keep=$KEEP dir=$BACKUP_DIR encryption=$encryption"
    while :; do
        : >"$HEARTBEAT_FILE"
        run_once
        : >"$HEARTBEAT_FILE"
        sleep "$BACKUP_INTERVAL_SECONDS" &
        worker=$!
        wait "$worker"
        worker=""
    done
}

whole_number KEEP "$KEEP"
whole_number BACKUP_INTERVAL_SECONDS "$BACKUP_INTERVAL_SECONDS"
[ "$KEEP" -ge 1 ] || fail_config "KEEP=$KEEP must be at least 1"
[ "$BACKUP_INTERVAL_SECONDS" -ge 1 ] || fail_config "BACKUP_INTERVAL_SECONDS must be at least 1"

trap 'cleanup; exit 143' TERM
trap 'cleanup; exit 130' INT

mode=${1:-}
case $mode in
    loop) loop ;;
    once)
        check_encryption
        run_once
        ;;
    prune)
        [ -d "$BACKUP_DIR" ] || fail_config "BACKUP_DIR $BACKUP_DIR is not a folder"
        log "prune $(prune)"
        ;;
    health) health ;;
    *)
        echo "usage: sh backup.sh loop|once|prune|health" >&2
        exit 2
        ;;
esac
