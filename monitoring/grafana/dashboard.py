"""Generates ``dashboards/sparsity.json``, the provisioned Grafana dashboard.

The JSON is committed (Grafana reads it); this script is its source. After editing, run
``python monitoring/grafana/dashboard.py``; a test fails when the two disagree.
"""

from __future__ import annotations

import json
from pathlib import Path

DATASOURCE = {"type": "prometheus", "uid": "prometheus-sparsity"}
OUT = Path(__file__).resolve().parent / "dashboards" / "sparsity.json"
M = 'model="$model"'
PREDICT = 'endpoint=~"/mnist/.*|/iris/.*|/models/[^/]+/predict.*"'
TYPICALITY_RATE = f"rate(model_typicality_score_bucket{{{M}}}[$__rate_interval])"

# (title, kind, unit, width, height, description, [(expr, legend)])
PANELS: list[tuple[str, str, str, int, int, str, list[tuple[str, str]]]] = [
    (
        "Request rate by endpoint",
        "timeseries",
        "reqps",
        8,
        8,
        "Prediction requests per second, all status codes.",
        [(f"sum by (endpoint) (rate(bentoml_service_request_total{{{PREDICT}}}[$__rate_interval]))", "{{endpoint}}")],
    ),
    (
        "Error rate by endpoint",
        "timeseries",
        "reqps",
        8,
        8,
        "4xx (bad input) and 5xx (server error) answers per second.",
        [
            (
                "sum by (endpoint, http_response_code) (rate(bentoml_service_request_total"
                f'{{{PREDICT}, http_response_code=~"4..|5.."}}[$__rate_interval]))',
                "{{endpoint}} {{http_response_code}}",
            )
        ],
    ),
    (
        "Request latency p50 / p95 / p99",
        "timeseries",
        "s",
        8,
        8,
        "Whole-request latency of the prediction endpoints (BentoML's histogram).",
        [
            (
                f"histogram_quantile({q}, sum by (le) "
                f"(rate(bentoml_service_request_duration_seconds_bucket{{{PREDICT}}}[$__rate_interval])))",
                f"p{round(q * 100)}",
            )
            for q in (0.5, 0.95, 0.99)
        ],
    ),
    (
        "Live activation sparsity vs training baseline",
        "timeseries",
        "percentunit",
        12,
        9,
        "Mean per-sample exact-zero fraction of each ReLU layer (layer 'all': all ReLU layers), "
        "against the mean measured on the training test set, per served version.",
        [
            (
                f"sum by (version, layer) (rate(activation_sparsity_ratio_sum{{{M}}}[$__rate_interval])) / "
                f"sum by (version, layer) (rate(activation_sparsity_ratio_count{{{M}}}[$__rate_interval]))",
                "{{layer}} live ({{version}})",
            ),
            (
                f"max by (version, layer) (activation_sparsity_baseline_ratio{{{M}}})",
                "{{layer}} baseline ({{version}})",
            ),
        ],
    ),
    (
        "Per-sample sparsity distribution (all ReLU layers)",
        "heatmap",
        "percentunit",
        12,
        9,
        "How many samples fell in each 0.05-wide band of overall sparsity.",
        [
            (
                f'sum by (le) (increase(activation_sparsity_ratio_bucket{{{M}, layer="all"}}[$__rate_interval]))',
                "{{le}}",
            )
        ],
    ),
    (
        "Dead units",
        "timeseries",
        "percentunit",
        8,
        8,
        "Share of units per ReLU-family layer that did not fire once over the last hour, over all workers and "
        "replicas (recording rule activation_dead_units:ratio_1h; shown once the hour holds 1000 samples).",
        [(f"max by (version, layer) (activation_dead_units:ratio_1h{{{M}}})", "{{layer}} ({{version}})")],
    ),
    (
        "Predictions per class",
        "timeseries",
        "short",
        8,
        8,
        "Predictions per second by predicted class.",
        [(f"sum by (label) (rate(model_predictions_total{{{M}}}[$__rate_interval]))", "{{label}}")],
    ),
    (
        "Inference time (forward pass + sparsity)",
        "timeseries",
        "s",
        8,
        8,
        "Time inside the model call, per request batch.",
        [
            (
                f"histogram_quantile({q}, sum by (le) "
                f"(rate(model_inference_duration_seconds_bucket{{{M}}}[$__rate_interval])))",
                f"p{round(q * 100)}",
            )
            for q in (0.5, 0.99)
        ],
    ),
    (
        "Batching: items per forward pass p50 / p99",
        "timeseries",
        "short",
        8,
        8,
        "Items each forward pass took from the model version's queue (requests that arrived together share a "
        "pass; BATCH_MAX_SIZE caps it).",
        [
            (
                f"histogram_quantile({q}, sum by (le) (rate(model_batch_items_bucket{{{M}}}[$__rate_interval])))",
                f"p{round(q * 100)}",
            )
            for q in (0.5, 0.99)
        ],
    ),
    (
        "Batching: queue wait p50 / p99",
        "timeseries",
        "s",
        8,
        8,
        "How long a request waited for its forward pass to start (BATCH_WAIT_MS adds to it).",
        [
            (
                f"histogram_quantile({q}, sum by (le) "
                f"(rate(model_queue_wait_seconds_bucket{{{M}}}[$__rate_interval])))",
                f"p{round(q * 100)}",
            )
            for q in (0.5, 0.99)
        ],
    ),
    (
        "Batching: requests refused, queue full (503)",
        "timeseries",
        "reqps",
        8,
        8,
        "Requests answered 503 with Retry-After because more than BATCH_MAX_QUEUE items were waiting.",
        [(f"sum(rate(model_queue_refusals_total{{{M}}}[$__rate_interval]))", "refused")],
    ),
    (
        "Weight sparsity",
        "bargauge",
        "percentunit",
        12,
        8,
        "Share of exactly-zero weights per layer (the L1 classifier: layer 'coefficients').",
        [("max by (model, layer) (model_weight_sparsity_ratio)", "{{model}} {{layer}}")],
    ),
    (
        "L1 classifier: zero coefficient x feature terms",
        "timeseries",
        "percentunit",
        12,
        8,
        "Mean per-sample share of coefficient x feature terms that are exactly zero.",
        [
            (
                "sum by (model) (rate(model_input_contribution_sparsity_ratio_sum[$__rate_interval])) / "
                "sum by (model) (rate(model_input_contribution_sparsity_ratio_count[$__rate_interval]))",
                "{{model}}",
            )
        ],
    ),
    (
        "Atypical inputs",
        "timeseries",
        "percentunit",
        12,
        8,
        "Share of predictions whose input scored above the model's calibrated typicality threshold "
        "(calibrated to 1% false alarms on held-back data; AtypicalInputsHigh fires above 10% over 10m).",
        [
            (
                "sum by (model) (rate(model_atypical_predictions_total[$__rate_interval])) / "
                "sum by (model) (rate(model_predictions_total[$__rate_interval]))",
                "{{model}}",
            )
        ],
    ),
    (
        "Drift: PSI of the last window against the calibration data",
        "timeseries",
        "short",
        12,
        8,
        "Population stability index of each version's last closed drift window (DRIFT_WINDOW items) against the "
        "calibration baseline, per signal (each layer's zero share, the typicality score); ModelInputsDrifted "
        "fires over 0.25.",
        [(f"max by (model, version, signal) (model_drift_psi{{{M}}})", "{{model}} {{version}} {{signal}}")],
    ),
    (
        "Prediction log: rows written, dropped, failed",
        "timeseries",
        "cps",
        12,
        8,
        "Rows of the prediction log a second: written, dropped (a worker's queue was full) or failed (the database "
        "refused them). Answers never wait for the log.",
        [("sum by (outcome) (rate(prediction_log_rows_total[$__rate_interval]))", "{{outcome}}")],
    ),
    (
        "Typicality score p50 / p99 against the threshold",
        "timeseries",
        "short",
        12,
        8,
        "Per-input typicality score, higher is less typical (ReLU models: how far each layer's per-unit firing is "
        "from the nearest class's calibration pattern; iris: distance of its features), and the threshold above "
        "which an input is flagged.",
        [
            *((f"histogram_quantile({q}, sum by (le) ({TYPICALITY_RATE}))", f"p{round(q * 100)}") for q in (0.5, 0.99)),
            (f"max(model_typicality_threshold{{{M}}})", "threshold"),
        ],
    ),
]


PAIR = "primary, candidate"
COMPARED = f'sum by ({PAIR}) (rate(shadow_items_total{{{M}, outcome="compared"}}[$__rate_interval]))'


def _side_mean(side: str) -> str:
    """A shadow's per-layer mean exact-zero share on one side (primary or candidate)."""
    selector = f'{{{M}, side="{side}"}}'
    return (
        f"sum by ({PAIR}, layer) (rate(shadow_activation_sparsity_ratio_sum{selector}[$__rate_interval])) / "
        f"sum by ({PAIR}, layer) (rate(shadow_activation_sparsity_ratio_count{selector}[$__rate_interval]))"
    )


SHADOW_ROW = "Shadow: the candidate against the primary, on the same requests"
SHADOW_PANELS: list[tuple[str, str, str, int, int, str, list[tuple[str, str]]]] = [
    (
        "Shadow: label agreement",
        "timeseries",
        "percentunit",
        8,
        8,
        "Share of the mirrored inputs on which the candidate gave the primary's label (PUT /models/NAME/shadow).",
        [
            (
                f"sum by ({PAIR}) (rate(shadow_label_agreements_total{{{M}}}[$__rate_interval])) / {COMPARED}",
                "{{primary}} -> {{candidate}}",
            )
        ],
    ),
    (
        "Shadow: probability shift (total variation)",
        "timeseries",
        "short",
        8,
        8,
        "Mean total variation distance between the two versions' probabilities on the same input (0: the same "
        "answer, 1: disjoint).",
        [
            (
                f"sum by ({PAIR}) (rate(shadow_probability_total_variation_sum{{{M}}}[$__rate_interval])) / "
                f"sum by ({PAIR}) (rate(shadow_probability_total_variation_count{{{M}}}[$__rate_interval]))",
                "{{primary}} -> {{candidate}}",
            )
        ],
    ),
    (
        "Shadow: inputs mirrored, compared, dropped",
        "timeseries",
        "short",
        8,
        8,
        "Mirrored inputs per second by outcome: dropped when a worker's shadow queue was full (the primary's work "
        "is never dropped), failed when the candidate refused an input the primary took.",
        [
            (
                f"sum by ({PAIR}, outcome) (rate(shadow_items_total{{{M}}}[$__rate_interval]))",
                "{{outcome}} ({{candidate}})",
            )
        ],
    ),
    (
        "Shadow: sparsity per layer, candidate minus primary",
        "timeseries",
        "percentunit",
        12,
        8,
        "Each layer's mean exact-zero share in the candidate minus the primary's, on the same inputs (layer 'all': "
        "every ReLU layer).",
        [(f"{_side_mean('candidate')} - on ({PAIR}, layer) {_side_mean('primary')}", "{{layer}} ({{candidate}})")],
    ),
    (
        "Shadow: atypical inputs, primary and candidate",
        "timeseries",
        "percentunit",
        6,
        8,
        "Share of the compared inputs each version flagged atypical (side both: flagged by both).",
        [
            (
                f"sum by ({PAIR}, side) (rate(shadow_atypical_total{{{M}}}[$__rate_interval])) / on ({PAIR}) "
                f"group_left {COMPARED}",
                "{{side}} ({{candidate}})",
            )
        ],
    ),
    (
        "Shadow: candidate's dead units",
        "timeseries",
        "short",
        6,
        8,
        "Units of the candidate that have not fired on any mirrored input since the shadow was set, per layer.",
        [
            (
                f"count by ({PAIR}, layer) "
                f"(sum by ({PAIR}, layer, unit) (shadow_candidate_unit_fired_total{{{M}}}) == 0)",
                "{{layer}} ({{candidate}})",
            )
        ],
    ),
]


def panel(index: int, x: int, y: int, spec) -> dict:
    title, kind, unit, width, height, description, targets = spec
    result = {
        "id": index + 1,
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "gridPos": {"h": height, "w": width, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {},
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "datasource": DATASOURCE,
                "expr": expr,
                "legendFormat": legend,
                **({"format": "heatmap"} if kind == "heatmap" else {}),
            }
            for i, (expr, legend) in enumerate(targets)
        ],
    }
    if kind == "heatmap":
        result["options"] = {"calculate": False, "yAxis": {"unit": unit}}
    return result


def laid_out(specs, first_id: int, y: int) -> tuple[list[dict], int]:
    """The panels of ``specs`` flowed left to right from ``y``, and the height they reach."""
    panels, x, row_height = [], 0, 0
    for i, spec in enumerate(specs):
        width, height = spec[3], spec[4]
        if x + width > 24:
            x, y, row_height = 0, y + row_height, 0
        panels.append(panel(first_id + i, x, y, spec))
        x, row_height = x + width, max(row_height, height)
    return panels, y + row_height


def dashboard() -> dict:
    panels, y = laid_out(PANELS, 0, 0)
    row = {"id": len(PANELS) + 1, "type": "row", "title": SHADOW_ROW, "collapsed": False, "panels": []}
    row["gridPos"] = {"h": 1, "w": 24, "x": 0, "y": y}
    shadow, _ = laid_out(SHADOW_PANELS, len(PANELS) + 1, y + 1)
    panels += [row, *shadow]
    return {
        "uid": "relu-sparsity",
        "title": "ReLU sparsity service",
        "description": "Activation sparsity, dead units, predictions and latency of the sparsity service",
        "tags": ["sparsity", "bentoml"],
        "timezone": "browser",
        "editable": False,
        "graphTooltip": 1,
        "refresh": "10s",
        "schemaVersion": 41,
        "version": 1,
        "time": {"from": "now-1h", "to": "now"},
        "annotations": {"list": []},
        "links": [],
        "templating": {
            "list": [
                {
                    "type": "query",
                    "name": "model",
                    "label": "Model",
                    "datasource": DATASOURCE,
                    "query": "label_values(model_predictions_total, model)",
                    "refresh": 2,
                    "includeAll": False,
                    "multi": False,
                    "sort": 1,
                    "current": {"text": "mnist_cnn", "value": "mnist_cnn"},
                }
            ]
        },
        "panels": panels,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    print(f"wrote {OUT}")
