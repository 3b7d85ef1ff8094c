#!/usr/bin/env bash
# Install everything mcu-ids needs on a fresh Debian machine: compilers, the Arm cross toolchain,
# QEMU, and the Python package with its test tools. Safe to run again.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
apt_packages=(
  gcc g++ make cmake clang
  gcc-arm-none-eabi libnewlib-arm-none-eabi binutils-arm-none-eabi
  qemu-system-arm
  valgrind
  chromium
)

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
  sudo_cmd=(sudo)
fi

missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}" >&2
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

echo "setup: installing the mcu-ids Python package" >&2
python3 -m pip install -q --disable-pip-version-check -e "${here}[dev,flash,energy]"
echo "setup: done; try \`mcu-ids --help\`" >&2
