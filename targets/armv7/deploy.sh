#!/usr/bin/env bash
# Copies edgeopt-bench and a .eom model to a armv7 device, benchmarks there, brings the JSON back
# (--help for options).
set -euo pipefail
# shellcheck source=SCRIPTDIR/../common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
eo_deploy armv7 "$@"
