#!/usr/bin/env bash
# Runs Debian's Prometheus against a locally served service, with the project's config and alert
# rules (the docker-compose target service:3000 rewritten to 127.0.0.1:SERVICE_PORT).
# Usage: scripts/local-prometheus.sh [SERVICE_PORT=3000] [PROMETHEUS_PORT=9090]
# Env: SCRAPE_INTERVAL (default 15s), PROMETHEUS_WORKDIR (default: a new temporary folder).
set -euo pipefail

service_port=${1:-3000}
prom_port=${2:-9090}
root=$(cd "$(dirname "$0")/.." && pwd)
work=${PROMETHEUS_WORKDIR:-$(mktemp -d -t local-prometheus-XXXXXX)}
interval=${SCRAPE_INTERVAL:-15s}

command -v prometheus >/dev/null || { echo "prometheus is not installed: run 'make system-deps'" >&2; exit 1; }
mkdir -p "$work/data"
sed -e "s/\"service:3000\"/\"127.0.0.1:${service_port}\"/" \
    -e "s/\"localhost:9090\"/\"127.0.0.1:${prom_port}\"/" \
    -e "s/scrape_interval: 15s/scrape_interval: ${interval}/" \
    -e "s/evaluation_interval: 15s/evaluation_interval: ${interval}/" \
    "$root/monitoring/prometheus/prometheus.yml" > "$work/prometheus.yml"
cp "$root/monitoring/prometheus/alerts.yml" "$work/alerts.yml"
promtool check config "$work/prometheus.yml" >/dev/null
echo "Prometheus on http://127.0.0.1:${prom_port} scraping http://127.0.0.1:${service_port}/metrics (files in $work)"
exec prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/data" \
     --web.listen-address="127.0.0.1:${prom_port}" --log.level=warn
