#!/usr/bin/env bash
# Builds edgeopt-bench and the runtime library for x86_64 into build/x86_64/ (--help for options).
set -euo pipefail
# shellcheck source=SCRIPTDIR/../common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
eo_build x86_64 "$@"
