#!/usr/bin/env bash
# Debian's chromium (the upload page's browser test) and postgresql (the tracking-server test), where
# they are missing and this user may install them; the tests that need them skip otherwise.
set -uo pipefail
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || missing+=(postgresql)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "note: ${missing[*]} not installed (apt-get install ${missing[*]}): the tests that need them will be skipped" >&2
    exit 0
fi
echo "Installing Debian's ${missing[*]} for the browser and tracking-server tests..."
if ! (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}") >/dev/null 2>&1; then
    echo "warning: could not install ${missing[*]}: the tests that need them will be skipped" >&2
fi
exit 0
