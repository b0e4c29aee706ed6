#!/usr/bin/env bash
# Makes a new random password for one refbus NATS user of permissions.conf: writes the
# password to DIR/<user>.password (mode 600; it goes to the component that logs in as that
# user) and prints the passwords.conf line that holds its bcrypt hash.
#
#     deploy/nats/new-password.sh maros-dinsos /root/refbus-secrets >> /etc/nats/passwords.conf
#
# Needs Python 3 with bcrypt: `apt-get install python3-bcrypt` on Debian and Ubuntu, or
# `pip install bcrypt==5.0.0`. Set PYTHON to use another interpreter.
set -euo pipefail

if [[ $# -lt 1 || $# -gt 2 ]]; then
    echo "usage: $0 USER [DIR]   (DIR defaults to the current directory)" >&2
    exit 2
fi
user="$1"
dir="${2:-.}"
permissions="$(dirname "${BASH_SOURCE[0]}")/permissions.conf"
if ! grep -q "user: \"$user\"" "$permissions"; then
    echo "$0: $permissions has no user \"$user\"" >&2
    exit 1
fi

umask 077
"${PYTHON:-python3}" - "$user" "$dir" <<'PY'
import os
import secrets
import sys

import bcrypt

user, directory = sys.argv[1], sys.argv[2]
password = secrets.token_urlsafe(24)
path = os.path.join(directory, f"{user}.password")
try:
    # "x": never overwrite a password a component may already be using.
    with open(path, "x") as file:
        file.write(password)
except FileExistsError:
    sys.exit(f"{path} exists: {user} has a password already (remove the file to replace it)")
digest = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=11)).decode()
variable = user.upper().replace("-", "_") + "_PASSWORD"
print(f'{variable}: "{digest}"')
print(f"{path}: the password itself, for {user} only", file=sys.stderr)
PY
