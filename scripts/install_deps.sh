#!/usr/bin/env bash
# Installs the Debian packages named as arguments that are not installed yet (apt-get; sudo
# when not root). Prints nothing to do when all are there.
set -euo pipefail
missing=()
for pkg in "$@"; do
  dpkg -s "$pkg" 2>/dev/null | grep "^Status: install ok installed" >/dev/null || missing+=("$pkg")
done
((${#missing[@]} == 0)) && exit 0
sudo=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "error: not root and no sudo; install: ${missing[*]}" >&2; exit 1; }
  sudo=(sudo)
fi
echo "==> installing ${missing[*]}"
"${sudo[@]}" apt-get update -q
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
