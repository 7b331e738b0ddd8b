#!/usr/bin/env bash
# Installs what the demo and the tests need, idempotently. Debian packages need root; without
# root, what is missing is reported and the tests that need it skip with a reason.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(btrfs-progs e2fsprogs xfsprogs util-linux openssh-server openssh-client rclone bc time)
[ "${1:-}" = "--demo" ] && packages=(btrfs-progs)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing: ${missing[*]}"
    # Refresh the package lists only when they are older than a day.
    if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mtime -1 2>/dev/null | head -1)" ]; then
      apt-get update -qq
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "not root: cannot install ${missing[*]}; tests needing them will skip"
  fi
fi
[ "${1:-}" = "--demo" ] && exit 0

python3 -m pytest --version >/dev/null 2>&1 || python3 -m pip install -q pytest

# Test servers and tools each have their own idempotent installer.
for installer in scripts/install-*.sh; do
  [ "$installer" = scripts/install-deps.sh ] && continue
  [ -x "$installer" ] && "$installer"
done
exit 0
