#!/usr/bin/env bash
# What `npm test` runs. Works on a fresh Debian 12 machine:
#   1. installs the npm dependencies when node_modules is missing or older than package-lock.json;
#   2. typechecks the whole project (src/, test/, scripts/, examples/, and web/ with its own tsconfig)
#      and lints it (eslint.config.js: neostandard plus type-aware typescript-eslint rules);
#   3. builds the page (web/dist), then installs the test services if missing (scripts/services.sh install);
#   4. unless MQIM_MYSQL_URL, MQIM_MONGO_URL and MQIM_REDIS_URL are all set already, starts MariaDB,
#      FerretDB and Redis on free ports in a temporary directory, and stops them on exit;
#   5. runs jest, passing through any arguments:  npm test -- test/foo.test.ts
# Set MQIM_KEEP_SERVICES_DIR=1 to keep the temporary directory (service logs) after the run.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# npm ci writes node_modules/.package-lock.json, so its age tells when node_modules was last installed.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "test.sh: installing npm dependencies (npm ci)" >&2
  npm ci --no-audit --no-fund
fi

echo "test.sh: typechecking" >&2
npx tsc -p tsconfig.json --noEmit
npx tsc -p web/tsconfig.json

echo "test.sh: linting" >&2
npx eslint .

# the page the server serves (tests of the HTTP listener look at it, as npm start does)
echo "test.sh: building the page (web/dist)" >&2
node scripts/build-web.mjs

bash scripts/services.sh install

if [ -n "${MQIM_MYSQL_URL:-}" ] && [ -n "${MQIM_MONGO_URL:-}" ] && [ -n "${MQIM_REDIS_URL:-}" ]; then
  echo "test.sh: using the services given by MQIM_MYSQL_URL, MQIM_MONGO_URL and MQIM_REDIS_URL" >&2
else
  services_dir="$(mktemp -d "${TMPDIR:-/tmp}/mqim-services.XXXXXX")"
  cleanup () {
    bash scripts/services.sh stop "$services_dir" || true
    if [ "${MQIM_KEEP_SERVICES_DIR:-}" = 1 ]; then
      echo "test.sh: service data and logs kept in $services_dir" >&2
    else
      rm -rf "$services_dir"
    fi
  }
  trap cleanup EXIT
  # Make Ctrl-C and kill also go through the EXIT trap, so no service outlives the run.
  trap 'exit 130' INT
  trap 'exit 143' TERM
  bash scripts/services.sh start "$services_dir"
  # shellcheck source=/dev/null
  source "$services_dir/env"
fi

status=0
NODE_OPTIONS="--experimental-vm-modules${NODE_OPTIONS:+ $NODE_OPTIONS}" npx jest "$@" || status=$?
exit "$status"
