#!/bin/sh
# Render the gateway template: every @NAME@ placeholder of TEMPLATE becomes the value of the
# environment variable NAME (defaults below), written to OUTPUT; with EXEC_ENVOY=1 it then
# execs envoy on it. Used by docker-compose.yml (envoy service) and by the e2e tests, so
# both run the same configuration.
#   usage: render.sh TEMPLATE OUTPUT [envoy args...]
set -eu

template=${1:?template path}
output=${2:?output path}
shift 2

: "${LISTEN_ADDRESS:=0.0.0.0}"
: "${LISTEN_PORT:=10000}"
: "${ADMIN_PORT:=9901}"
: "${APP_HOST:=demo}"
: "${APP_PORT:=8000}"
: "${MIRROR_HOST:=receiver}"
: "${MIRROR_PORT:=8445}"
: "${MIRROR_PERCENT:=100}"
: "${BATCH_HOST:=receiver}"
: "${BATCH_PORT:=8446}"
: "${BATCH_TOKEN:=}"
: "${LUA_DIR:=/usr/local/share/lua/5.1}"
: "${LUA_BATCH_SIZE:=50}"
: "${LUA_SAMPLE_RATE:=1}"
: "${LUA_CAPTURE_RESPONSE_BODY:=true}"

case "$LUA_CAPTURE_RESPONSE_BODY" in
  true|false) ;;
  *) echo "render.sh: LUA_CAPTURE_RESPONSE_BODY must be true or false" >&2; exit 2 ;;
esac

# The token lands inside a Lua string in YAML: allow only token characters.
case "$BATCH_TOKEN" in
  *[!A-Za-z0-9._~+/=-]*) echo "render.sh: BATCH_TOKEN has characters outside [A-Za-z0-9._~+/=-]" >&2; exit 2 ;;
esac

sed \
  -e "s|@LISTEN_ADDRESS@|$LISTEN_ADDRESS|g" \
  -e "s|@LISTEN_PORT@|$LISTEN_PORT|g" \
  -e "s|@ADMIN_PORT@|$ADMIN_PORT|g" \
  -e "s|@APP_HOST@|$APP_HOST|g" \
  -e "s|@APP_PORT@|$APP_PORT|g" \
  -e "s|@MIRROR_HOST@|$MIRROR_HOST|g" \
  -e "s|@MIRROR_PORT@|$MIRROR_PORT|g" \
  -e "s|@MIRROR_PERCENT@|$MIRROR_PERCENT|g" \
  -e "s|@BATCH_HOST@|$BATCH_HOST|g" \
  -e "s|@BATCH_PORT@|$BATCH_PORT|g" \
  -e "s|@BATCH_TOKEN@|$BATCH_TOKEN|g" \
  -e "s|@LUA_DIR@|$LUA_DIR|g" \
  -e "s|@LUA_BATCH_SIZE@|$LUA_BATCH_SIZE|g" \
  -e "s|@LUA_SAMPLE_RATE@|$LUA_SAMPLE_RATE|g" \
  -e "s|@LUA_CAPTURE_RESPONSE_BODY@|$LUA_CAPTURE_RESPONSE_BODY|g" \
  "$template" > "$output"

if grep -n '@[A-Z_]*@' "$output" >&2; then
  echo "render.sh: placeholders left in $output" >&2
  exit 2
fi

if [ "${EXEC_ENVOY:-0}" = "1" ]; then
  exec envoy -c "$output" "$@"
fi
