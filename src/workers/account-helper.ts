import { ACCOUNT_PATTERN, PASSWORD_HASH_PATTERN } from './worker-commands.js';

/** Root's own state: the next rental UID (`next-uid`) and the lock every run holds. */
export const ACCOUNT_STATE_DIRECTORY = '/var/lib/dispatcher-account';
/** Rental UIDs (and their groups' GIDs): far above people's accounts, each used once per worker. */
export const RENTAL_ID_RANGE = { first: 200_000, last: 299_999 } as const;

/**
 * A JavaScript pattern as a POSIX extended regular expression for `grep -E`, refused unless it is
 * written in the subset where both mean the same thing (anchored, no flags, no JavaScript-only
 * syntax, backslash only before `$` or `.`, no quote that would end the shell string).
 */
export function toExtendedRegex(pattern: RegExp): string {
  const source = pattern.source;
  const portable = pattern.flags === '' && source.startsWith('^') && source.endsWith('$') && !source.endsWith('\\$');
  if (!portable || source.includes("'") || source.includes('(?') || /\\[^$.]/.test(source)) {
    throw new Error(`the pattern /${source}/${pattern.flags} cannot be checked by the helper's grep -E the same way`);
  }
  return source;
}

/**
 * The text of /usr/local/sbin/dispatcher-account: a POSIX sh script, so that what runs as root is
 * one short file with no interpreter or library a non-root account could change. It validates its
 * arguments with the control plane's own patterns (embedded here, not copied), then runs fixed
 * programs with fixed options and quoted arguments.
 */
export function accountHelperScript(): string {
  const { first, last } = RENTAL_ID_RANGE;
  return `#!/bin/sh
# dispatcher-account: creates and removes Dispatcher's rental accounts (rent_xxxxxxxx) on a worker.
# Written by \`dispatcher worker-setup\`: edit the generator, not this file. The sudoers rule lets the
# provisioning account run this file and nothing else, so every argument is checked here again.
#
#   dispatcher-account provision <rent_xxxxxxxx> <SHA-512 crypt hash>   create it, or set its password
#   dispatcher-account deprovision <rent_xxxxxxxx>                      remove it and all it left
#   dispatcher-account check provision|deprovision <arguments>          only check the arguments
#
# Rental UIDs (and GIDs) come from ${first}-${last} and are never reused on this machine, so no
# renter can own what an earlier one left anywhere. Exit codes: 0 done, 2 refused, 1 failed.
set -eu
PATH=/usr/sbin:/usr/bin:/sbin:/bin
LC_ALL=C
IFS=' \t\n'
export PATH LC_ALL
umask 077

ACCOUNT_PATTERN='${toExtendedRegex(ACCOUNT_PATTERN)}'
HASH_PATTERN='${toExtendedRegex(PASSWORD_HASH_PATTERN)}'
FIRST_ID=${first}
LAST_ID=${last}
STATE=${ACCOUNT_STATE_DIRECTORY}
NEWLINE='
'

refuse() { echo "dispatcher-account: refused: $1" >&2; exit 2; }
fail() { echo "dispatcher-account: $1" >&2; exit 1; }

# grep reads lines: a value holding a newline is refused before grep could match one of its lines.
matches() {
  case $1 in *"$NEWLINE"*) return 1 ;; esac
  printf '%s\\n' "$1" | grep -Eqx -e "$2"
}

check_arguments() {
  case \${1-} in
    provision) [ $# -eq 3 ] || refuse "provision takes exactly an account and a password hash" ;;
    deprovision) [ $# -eq 2 ] || refuse "deprovision takes exactly an account" ;;
    *) refuse "expected provision <rent_xxxxxxxx> <hash> or deprovision <rent_xxxxxxxx>" ;;
  esac
  matches "$2" "$ACCOUNT_PATTERN" || refuse "account name (not rent_ and 8 of a-z 0-9)"
  [ "$1" = deprovision ] || matches "$3" "$HASH_PATTERN" || refuse "password hash (not SHA-512 crypt)"
}

is_rental_id() {
  case $1 in '' | *[!0-9]*) return 1 ;; esac
  [ "$1" -ge "$FIRST_ID" ] && [ "$1" -le "$LAST_ID" ]
}

# The account's UID; empty when there is no such account (getent's exit code 2).
uid_of() {
  status=0
  entry=$(getent passwd "$1") || status=$?
  [ "$status" -eq 0 ] || { [ "$status" -eq 2 ] && return 0; fail "getent passwd $1 failed ($status)"; }
  printf '%s\\n' "$entry" | cut -d: -f3
}

remove_leftover_group() {
  entry=$(getent group "$1") || return 0
  gid=$(printf '%s\\n' "$entry" | cut -d: -f3)
  is_rental_id "$gid" || fail "group $1 has GID $gid, outside the rental range: not touching it"
  groupdel "$1" || fail "groupdel $1 failed"
}

# The lowest id from the state file on that is no user's, no group's and in no subordinate range.
allocate_id() {
  next=$FIRST_ID
  [ ! -f "$STATE/next-uid" ] || next=$(cat "$STATE/next-uid")
  is_rental_id "$next" || fail "no rental UID left ($STATE/next-uid holds '$next')"
  while :; do
    subids=
    for file in /etc/subuid /etc/subgid; do [ ! -f "$file" ] || subids="$subids $file"; done
    # shellcheck disable=SC2086 # the word splitting of $subids is wanted: existing files only
    next=$( (getent passwd; getent group) | awk -F: -v start="$next" -v last="$LAST_ID" '
      NR == FNR { used[$3] = 1; next }
      { low[n] = $2; high[n] = $2 + $3; n++ }
      END {
        for (id = start; id <= last; id++) {
          if (id in used) continue
          for (r = 0; r < n; r++) if (low[r] <= id && id < high[r]) { id = high[r] - 1; break }
          if (r == n) { print id; exit }
        }
      }' - $subids)
    is_rental_id "$next" || fail "no rental UID left in $FIRST_ID-$LAST_ID"
    # Accounts that are not enumerated (LDAP) are still found by number.
    if getent passwd "$next" > /dev/null || getent group "$next" > /dev/null; then next=$((next + 1)); else break; fi
  done
  printf '%s\\n' $((next + 1)) > "$STATE/next-uid.new"
  mv -f "$STATE/next-uid.new" "$STATE/next-uid"
  echo "$next"
}

provision() {
  uid=$(uid_of "$1")
  if [ -n "$uid" ]; then
    # A retry, or a migration back: the same account, this password, unlocked and not expired.
    is_rental_id "$uid" || fail "$1 exists with UID $uid, outside the rental range: not touching it"
    usermod --password "$2" --expiredate '' "$1" || fail "usermod $1 failed"
    return 0
  fi
  remove_leftover_group "$1"
  id=$(allocate_id)
  groupadd --gid "$id" "$1" || fail "groupadd $1 failed"
  # No subordinate ids: a renter's user namespaces could otherwise reach ids another renter gets.
  useradd --uid "$id" --gid "$id" --no-user-group --create-home --shell /bin/bash --comment 'Dispatcher rental' \\
    --password "$2" -K SUB_UID_COUNT=0 -K SUB_GID_COUNT=0 "$1" || fail "useradd $1 failed"
}

stop_processes() {
  tries=0
  while pgrep -u "$1" > /dev/null || pgrep -U "$1" > /dev/null; do
    pkill -KILL -u "$1" || true
    pkill -KILL -U "$1" || true
    tries=$((tries + 1))
    [ "$tries" -le 100 ] || fail "processes of UID $1 are still running after SIGKILL"
    sleep 0.1
  done
}

deprovision() {
  uid=$(uid_of "$1")
  if [ -z "$uid" ]; then
    remove_leftover_group "$1"
    return 0
  fi
  is_rental_id "$uid" || fail "$1 has UID $uid, outside the rental range: not touching it"
  usermod --lock --expiredate 1 "$1" || fail "usermod --lock $1 failed"
  # systemd would start a lingering renter's user manager again; neither matters without systemd.
  if command -v loginctl > /dev/null; then
    loginctl disable-linger "$1" 2> /dev/null || true
    loginctl terminate-user "$1" 2> /dev/null || true
  fi
  stop_processes "$uid"
  # crontab -r fails when there is none, which is fine.
  if command -v crontab > /dev/null; then crontab -r -u "$1" 2> /dev/null || true; fi
  if command -v atq > /dev/null && command -v atrm > /dev/null; then
    for job in $(atq | awk -v user="$1" '$NF == user && $1 ~ /^[0-9]+$/ { print $1 }'); do atrm "$job" || fail "atrm $job failed"; done
  fi
  for directory in /tmp /var/tmp /dev/shm; do
    [ ! -d "$directory" ] || find "$directory" -xdev -user "$uid" -depth -delete || fail "could not remove the files of $1 in $directory"
  done
  status=0
  userdel --remove "$1" || status=$?
  [ "$status" -eq 0 ] || [ "$status" -eq 6 ] || fail "userdel --remove $1 failed ($status)"
  remove_leftover_group "$1"
}

if [ "\${1-}" = check ]; then
  shift
  check_arguments "$@"
  exit 0
fi
check_arguments "$@"
[ "$(id -u)" -eq 0 ] || fail "must run as root (through sudo)"
for program in useradd usermod userdel groupadd groupdel getent pgrep pkill find flock awk cut; do
  command -v "$program" > /dev/null || fail "$program is missing: rental accounts cannot be managed safely without it"
done
mkdir -p "$STATE"
chmod 0700 "$STATE"
# One run at a time: the UID allocation and an account's removal are never interleaved.
exec 9>> "$STATE/lock"
flock -w 60 9 || fail "another dispatcher-account run still holds $STATE/lock"
case $1 in
  provision) provision "$2" "$3" ;;
  deprovision) deprovision "$2" ;;
esac
`;
}
