#!/usr/bin/env bash
# Installs the Debian packages the tests use, when missing: prometheus (server + promtool), postgresql,
# docker-compose (only for `docker-compose config -q`), wrk (benchmarks), kubectl (its kustomize
# renders deploy/k8s), Node.js with npm (the Kubernetes schema validator in tests/k8s) and a few font
# packages (letters rendered in many typefaces for the typicality study, benchmarks/ood_sets.py), and
# Chromium with its WebDriver (the page's tests in a real browser, tests/integration/test_page.py).
set -euo pipefail

missing=()
command -v prometheus >/dev/null || missing+=(prometheus)
command -v promtool >/dev/null || missing+=(prometheus)
command -v docker-compose >/dev/null || missing+=(docker-compose)
command -v wrk >/dev/null || missing+=(wrk)
command -v kubectl >/dev/null || missing+=(kubectl)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
# PostgreSQL's server (the prediction log's tests run the same suite on SQLite and on a real PostgreSQL)
compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null || missing+=(postgresql)
for font in fonts-liberation fonts-freefont-ttf fonts-urw-base35 fonts-dejavu-extra; do
  [ -d "/usr/share/doc/$font" ] || missing+=("$font")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "need root or sudo to apt-get install: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
echo "installing system packages: ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian's package starts a system Prometheus on :9090; the tests run their own.
if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; then
  $sudo systemctl stop prometheus || true
fi
