#!/bin/sh
# One command for the whole benchmark: see bench/README.md.
exec python3 "$(dirname "$0")/run.py" "$@"
