#!/usr/bin/env bash
# Set up everything Wirewatch needs on a fresh Debian machine, idempotently:
# system packages (redis-server, Java, Maven), the virtualenv, torch (pinned, installed first),
# the package with its dev extras, and Kafka's jars. Safe to run again; skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_VERSION=2.13.0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

need_apt=()
command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ] || need_apt+=(redis-server)
command -v java >/dev/null 2>&1 || need_apt+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need_apt+=(maven)
# The dashboard's browser tests drive Debian's chromium through its chromedriver (never a downloaded browser).
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
[ -x /usr/bin/chromedriver ] || need_apt+=(chromium-driver)
for extra in ${WIREWATCH_APT_EXTRA:-}; do
  dpkg -s "$extra" >/dev/null 2>&1 || need_apt+=("$extra")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]} from Debian's packages"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip wheel
fi
PIP="$VENV/bin/pip"

if ! "$VENV/bin/python" -c "import torch, sys; sys.exit(0 if torch.__version__.split('+')[0] == '$TORCH_VERSION' else 1)" 2>/dev/null; then
  echo "setup: installing torch==$TORCH_VERSION first (a CPU wheel where pip is set up with one; the first time takes minutes)"
  "$PIP" install -q "torch==$TORCH_VERSION"
fi

stamp="$VENV/.wirewatch-installed"
want=$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing wirewatch and its dependencies into $VENV"
  "$PIP" install -q -e '.[dev]'
  echo "$want" > "$stamp"
fi

"$VENV/bin/wirewatch" stack fetch >/dev/null
echo "setup: ready ($("$VENV/bin/python" --version), torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)'), $(redis-server --version | cut -d' ' -f3), kafka jars cached)"
