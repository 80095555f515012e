#!/usr/bin/env bash
# Install SeeAloud on a fresh Debian/Ubuntu machine: system packages, a virtual
# environment in .venv, and the Python packages for the chosen profile.
#
#   scripts/install.sh            the server with its models (in-process VLM, speech)
#   scripts/install.sh test       the above plus the test and benchmark tools
#   scripts/install.sh core       only the server core (no models)
#
# Re-running is safe; it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${1:-all}"

sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if command -v apt-get >/dev/null 2>&1; then
    need=()
    # espeak-ng: the voice of pyttsx3. libglib2.0-0: OpenCV's runtime library.
    for pkg in espeak-ng libespeak-ng1 libglib2.0-0; do
        dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
    done
    if [ "$profile" = test ]; then
        # The browser end-to-end tests drive Debian's Chromium (no browser download);
        # the text-reading tests and benchmark render signs in these fonts.
        for pkg in chromium chromium-driver fonts-dejavu-core fonts-liberation2 fonts-noto-cjk; do
            dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
        done
    fi
    if [ "${#need[@]}" -gt 0 ]; then
        echo "installing system packages: ${need[*]}"
        sudo_if_needed apt-get update -q
        sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
    fi
else
    echo "warning: no apt-get; install espeak-ng yourself for speech output" >&2
fi

python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
case "$profile" in
    core) extras="" ;;
    all) extras="[all]" ;;
    test) extras="[all,test]" ;;
    *) echo "unknown profile $profile (core, all, test)" >&2; exit 2 ;;
esac
# torch first, pinned: other versions download several GB.
if [ "$profile" != core ]; then
    .venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
fi
.venv/bin/python -m pip install -q -e ".${extras}"
echo "installed SeeAloud ($profile) in .venv"
