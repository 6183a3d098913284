#!/usr/bin/env bash
# One entry point for a fresh machine. Creates .venv, installs imgverify from this checkout,
# then:
#   bash setup.sh demo   check the shipped examples against the embedded default archive
#   bash setup.sh test   lint (ruff), type-check (mypy) and run the test suite (pytest)
#   bash setup.sh        just install
set -euo pipefail
cd "$(dirname "$0")"
task="${1:-install}"
PY="${PYTHON:-python3}"

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
pip_install() { .venv/bin/python -m pip install --disable-pip-version-check -q "$@"; }

case "$task" in
  demo)
    pip_install -e .
    echo "== A photo circulating as 'last night' (claimed 2025-06-01):"
    .venv/bin/imgverify check fixtures/examples/viral_rocket_repost.jpg \
      --claimed-date 2025-06-01 --claimed-place "Springfield"
    echo
    echo "== A photo that is not in the archive:"
    .venv/bin/imgverify check fixtures/not_archived/chelsea.jpg --claimed-date 2025-06-01
    ;;
  test)
    # the browser test needs Debian's Chromium and ChromeDriver (never a downloaded browser)
    if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
      if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
        echo "== installing chromium and chromium-driver (Debian packages)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
      else
        echo "!! chromium/chromedriver missing and not root: the browser test will be skipped" >&2
      fi
    fi
    pip_install -e ".[test,all]"
    echo "== ruff"; .venv/bin/ruff check imgverify tests bench reference_index fixtures
    echo "== mypy"; .venv/bin/mypy
    echo "== import contracts"; .venv/bin/lint-imports
    # one pytest worker per core (pytest-xdist); IMGVERIFY_TEST_WORKERS=0 runs them in-process
    echo "== pytest"; .venv/bin/python -m pytest -q -n "${IMGVERIFY_TEST_WORKERS:-auto}"
    ;;
  install)
    pip_install -e .
    echo "installed: .venv/bin/imgverify --help"
    ;;
  *)
    echo "usage: bash setup.sh [demo|test|install]" >&2
    exit 2
    ;;
esac
