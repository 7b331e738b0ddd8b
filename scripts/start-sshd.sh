#!/usr/bin/env bash
# Starts a throw-away OpenSSH server on 127.0.0.1 for the SSH runner tests, idempotently.
#
#   scripts/start-sshd.sh [DIR]      (DIR defaults to $LUSTREKIT_SSHD_DIR or /tmp/lustrekit-sshd)
#
# DIR receives a host key, an authorized client key pair (client_key), a second key pair that
# is NOT authorized (bad_key), authorized_keys, known_hosts, sshd_config, sshd.pid and
# sshd.log. sshd listens on 127.0.0.1 only, accepts public keys only (no passwords), and lets
# the invoking user (root included) log in by key.
#
# On success, stdout is only `export VAR=...` lines (scripts/test.sh evals them):
#   LUSTREKIT_SSHD_PORT, LUSTREKIT_SSHD_USER, LUSTREKIT_SSHD_KEY, LUSTREKIT_SSHD_BAD_KEY,
#   LUSTREKIT_SSHD_KNOWN_HOSTS, LUSTREKIT_SSHD_DIR
# When sshd cannot be had (not root and not installed, no apt), it says why on stderr and
# exits 3: the tests then skip with that reason.
set -euo pipefail

dir="${1:-${LUSTREKIT_SSHD_DIR:-${TMPDIR:-/tmp}/lustrekit-sshd}}"
sshd=/usr/sbin/sshd
log() { echo "start-sshd: $*" >&2; }

if [ ! -x "$sshd" ] || ! command -v ssh-keygen >/dev/null || ! command -v ssh >/dev/null; then
  if [ "$(id -u)" != 0 ]; then
    log "openssh-server is not installed and we are not root to install it"
    exit 3
  fi
  if ! command -v apt-get >/dev/null; then
    log "openssh-server is not installed and apt-get is not available"
    exit 3
  fi
  log "installing openssh-server openssh-client"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      openssh-server openssh-client >/dev/null 2>&1; then
    apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      openssh-server openssh-client >/dev/null 2>&1 || { log "apt-get install openssh-server failed"; exit 3; }
  fi
fi

mkdir -p "$dir"
chmod 700 "$dir"
dir="$(cd "$dir" && pwd)"
user="$(id -un)"

emit() {
  local port="$1"
  cat <<OUT
export LUSTREKIT_SSHD_DIR=$dir
export LUSTREKIT_SSHD_PORT=$port
export LUSTREKIT_SSHD_USER=$user
export LUSTREKIT_SSHD_KEY=$dir/client_key
export LUSTREKIT_SSHD_BAD_KEY=$dir/bad_key
export LUSTREKIT_SSHD_KNOWN_HOSTS=$dir/known_hosts
OUT
}

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Already running? Reuse it.
if [ -f "$dir/sshd.pid" ] && [ -f "$dir/port" ]; then
  pid="$(cat "$dir/sshd.pid")"
  port="$(cat "$dir/port")"
  if kill -0 "$pid" 2>/dev/null && listening "$port"; then
    emit "$port"
    exit 0
  fi
fi

[ -f "$dir/host_key" ] || ssh-keygen -q -t ed25519 -N '' -C lustrekit-test-host -f "$dir/host_key"
[ -f "$dir/client_key" ] || ssh-keygen -q -t ed25519 -N '' -C lustrekit-test-client -f "$dir/client_key"
[ -f "$dir/bad_key" ] || ssh-keygen -q -t ed25519 -N '' -C lustrekit-test-unauthorized -f "$dir/bad_key"
cp "$dir/client_key.pub" "$dir/authorized_keys"
chmod 600 "$dir/authorized_keys" "$dir/client_key" "$dir/bad_key" "$dir/host_key"

# A free port: nothing answers on it.
port=""
for _ in $(seq 1 50); do
  candidate=$(( 20000 + RANDOM % 20000 ))
  if ! listening "$candidate"; then port="$candidate"; break; fi
done
[ -n "$port" ] || { log "no free port found"; exit 1; }

cat > "$dir/sshd_config" <<CONF
Port $port
ListenAddress 127.0.0.1
HostKey $dir/host_key
PidFile $dir/sshd.pid
AuthorizedKeysFile $dir/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
PermitUserEnvironment no
AllowTcpForwarding no
X11Forwarding no
LogLevel ERROR
MaxStartups 64:30:128
CONF

echo "[127.0.0.1]:$port $(cut -d' ' -f1,2 "$dir/host_key.pub")" > "$dir/known_hosts"
echo "$port" > "$dir/port"

# Privilege separation directory (root only; a non-root sshd runs without it).
[ "$(id -u)" = 0 ] && mkdir -p /run/sshd && chmod 755 /run/sshd

"$sshd" -t -f "$dir/sshd_config" || { log "sshd rejected $dir/sshd_config"; exit 1; }
# -D keeps it in the foreground of its own detached session; -E sends its log to a file.
setsid "$sshd" -D -f "$dir/sshd_config" -E "$dir/sshd.log" </dev/null >/dev/null 2>&1 &
echo $! > "$dir/sshd.pid"

for _ in $(seq 1 50); do
  if listening "$port"; then
    log "sshd listening on 127.0.0.1:$port (pid $(cat "$dir/sshd.pid"), dir $dir)"
    emit "$port"
    exit 0
  fi
  sleep 0.1
done
log "sshd did not start; see $dir/sshd.log"
cat "$dir/sshd.log" >&2 || true
exit 1
