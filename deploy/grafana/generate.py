#!/usr/bin/env python3
"""Writes modelwatch's Grafana dashboards (JSON, Grafana 10/11, schemaVersion 39)
into deploy/grafana/ and helm/modelwatch/dashboards/.

The dashboards are code: edit this file and run it (`python3
deploy/grafana/generate.py`); a test checks that the JSON files are what it
writes, and runs every PromQL expression below against a real Prometheus that
scraped a real modelwatch (tests/it/dashboards.rs).

Every dashboard has a Prometheus data-source variable and namespace, pod,
model and version variables ("All" matches everything). `namespace` and `pod`
are the labels Prometheus's Kubernetes discovery adds (the chart's PodMonitor
does). Panels over the whole fleet read the recording rules of
deploy/prometheus/modelwatch-rules.yml, which aggregate those labels away.
"""

import json
import os
import sys

DS = {"type": "prometheus", "uid": "${datasource}"}
S = 'namespace=~"$namespace", pod=~"$pod"'
M = S + ', model=~"$model", model_version=~"$version"'
RI = "$__rate_interval"


class Board:
    def __init__(self, uid, title, description, tags, extra_vars=()):
        self.uid, self.title, self.description = uid, title, description
        self.tags = ["modelwatch"] + list(tags)
        self.panels = []
        self.next_id = 1
        self.x = 0
        self.y = 0
        self.row_h = 0
        self.extra_vars = list(extra_vars)

    def row(self, title):
        self.newline()
        self.panels.append({"type": "row", "title": title, "id": self.next_id, "collapsed": False,
                            "gridPos": {"x": 0, "y": self.y, "w": 24, "h": 1}, "panels": []})
        self.next_id += 1
        self.y += 1

    def newline(self):
        if self.x:
            self.y += self.row_h
            self.x = 0
            self.row_h = 0

    def add(self, kind, title, targets, w=12, h=8, unit=None, description="", options=None, field=None, **extra):
        if self.x + w > 24:
            self.newline()
        p = {
            "type": kind,
            "title": title,
            "description": description,
            "id": self.next_id,
            "datasource": DS,
            "gridPos": {"x": self.x, "y": self.y, "w": w, "h": h},
            "targets": [],
            "fieldConfig": {"defaults": dict(field or {}), "overrides": []},
            "options": options or {},
        }
        if unit:
            p["fieldConfig"]["defaults"]["unit"] = unit
        for i, t in enumerate(targets):
            if isinstance(t, str):
                t = (t, "")
            expr, legend = t[0], t[1]
            tgt = {"refId": chr(ord("A") + i), "datasource": DS, "expr": expr, "legendFormat": legend or "__auto",
                   "range": True, "instant": False, "editorMode": "code"}
            if kind in ("stat", "barchart", "table", "bargauge"):
                tgt["range"], tgt["instant"] = False, True
            if kind in ("barchart", "table"):
                tgt["format"] = "table"
            if kind == "heatmap":
                tgt["format"] = "heatmap"
                tgt["legendFormat"] = "{{le}}"
            p["targets"].append(tgt)
        p.update(extra)
        self.panels.append(p)
        self.next_id += 1
        self.x += w
        self.row_h = max(self.row_h, h)
        return p

    def ts(self, title, targets, unit=None, **kw):
        return self.add("timeseries", title, targets, unit=unit,
                        field={"custom": {"lineWidth": 1, "fillOpacity": 10, "showPoints": "never"}}, **kw)

    def stat(self, title, expr, unit=None, w=6, h=4, **kw):
        return self.add("stat", title, [expr], w=w, h=h, unit=unit,
                        options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                                 "colorMode": "value", "graphMode": "none"}, **kw)

    def bars(self, title, expr, x_field, unit=None, **kw):
        return self.add("barchart", title, [expr], unit=unit,
                        options={"xField": x_field, "orientation": "horizontal", "showValue": "auto",
                                 "legend": {"showLegend": False, "displayMode": "list", "placement": "bottom"}},
                        transformations=[{"id": "organize", "options": {"excludeByName": {"Time": True}}}], **kw)

    def table(self, title, expr, **kw):
        return self.add("table", title, [expr], options={"showHeader": True},
                        transformations=[{"id": "organize", "options": {"excludeByName": {"Time": True}}}], **kw)

    def heatmap(self, title, expr, **kw):
        return self.add("heatmap", title, [expr],
                        options={"calculate": False, "yAxis": {"unit": "s"}, "cellGap": 1,
                                 "color": {"mode": "scheme", "scheme": "Oranges", "steps": 64},
                                 "rowsFrame": {"layout": "auto"}, "tooltip": {"mode": "single", "yHistogram": True}},
                        **kw)

    def json(self):
        def var(name, label, query):
            return {"name": name, "label": label, "type": "query", "datasource": DS,
                    "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery", "qryType": 1},
                    "definition": query, "refresh": 2, "includeAll": True, "allValue": ".*", "multi": True,
                    "current": {"selected": True, "text": ["All"], "value": ["$__all"]}, "options": [], "sort": 1,
                    "hide": 0, "regex": "", "skipUrlSync": False}
        variables = [
            {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
             "current": {}, "hide": 0, "refresh": 1, "regex": "", "options": [], "skipUrlSync": False},
            var("namespace", "Namespace", "label_values(modelwatch_upstream_up, namespace)"),
            var("pod", "Pod", 'label_values(modelwatch_upstream_up{namespace=~"$namespace"}, pod)'),
            var("model", "Model", 'label_values(modelwatch_model_requests_total{namespace=~"$namespace"}, model)'),
            var("version", "Version", 'label_values(modelwatch_model_requests_total{namespace=~"$namespace", model=~"$model"}, model_version)'),
        ] + [var(*v) for v in self.extra_vars]
        return {
            "uid": self.uid, "title": self.title, "description": self.description, "tags": self.tags,
            "schemaVersion": 39, "version": 1, "editable": True, "graphTooltip": 1,
            "time": {"from": "now-6h", "to": "now"}, "refresh": "30s", "timezone": "browser",
            "templating": {"list": variables},
            "annotations": {"list": [{
                "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True, "hide": True,
                "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard"}]},
            "links": [{"title": "modelwatch dashboards", "type": "dashboards", "tags": ["modelwatch"], "asDropdown": True,
                       "includeVars": True, "keepTime": True}],
            "panels": self.panels,
        }


def overview():
    b = Board("modelwatch-overview", "modelwatch / Overview",
              "Traffic, errors and latency through modelwatch, LLM figures, alerts.", ["overview"])
    b.stat("Model server up", f"min(modelwatch_upstream_up{{{S}}})",
           description="1 when every selected sidecar reaches its model server.")
    b.stat("Requests per second", f"sum(rate(http_server_request_duration_seconds_count{{{S}}}[{RI}]))", unit="reqps")
    b.stat("Errors (5xx or no answer)",
           f'(sum(rate(http_server_request_duration_seconds_count{{{S}, error_type!=""}}[{RI}])) or vector(0))'
           f" / sum(rate(http_server_request_duration_seconds_count{{{S}}}[{RI}]))", unit="percentunit")
    b.stat("Alerts firing in sidecars", f'count(modelwatch_alerts{{{S}, alertstate="firing"}} == 1)',
           description="Rules evaluated inside modelwatch (alerts.rules).")
    b.row("Traffic")
    b.ts("Requests per second by route and status",
         [(f"sum by (http_route, http_response_status_code) (rate(http_server_request_duration_seconds_count{{{S}}}[{RI}]))",
           "{{http_route}} {{http_response_status_code}}")], unit="reqps")
    b.ts("Latency through modelwatch",
         [(f"histogram_quantile({q}, sum by (le) (rate(http_server_request_duration_seconds_bucket{{{S}}}[{RI}])))", f"p{int(q * 100)}")
          for q in (0.5, 0.95, 0.99)], unit="s")
    b.heatmap("Latency distribution", f"sum by (le) (increase(http_server_request_duration_seconds_bucket{{{S}}}[{RI}]))")
    b.ts("Model server errors by kind",
         [(f"sum by (error_type) (rate(modelwatch_upstream_errors_total{{{S}}}[{RI}]))", "{{error_type}}")], unit="reqps",
         description="Refused or timed-out connections, response timeouts, resets: what clients saw as 502/504.")
    b.ts("Requests per model version (sampled)",
         [(f"sum by (model, model_version, result) (rate(modelwatch_model_requests_total{{{M}}}[{RI}]))",
           "{{model}} {{model_version}} {{result}}")], unit="reqps")
    b.ts("Samples taken, analysed and dropped",
         [(f"sum(rate(modelwatch_samples_taken_total{{{S}}}[{RI}]))", "taken"),
          (f"sum(rate(modelwatch_samples_analyzed_total{{{S}}}[{RI}]))", "analysed"),
          (f"sum by (reason) (rate(modelwatch_samples_dropped_total{{{S}}}[{RI}]))", "dropped {{reason}}")],
         unit="ops", description="Drops mean monitoring fell behind; traffic is never slowed for it.")
    b.row("LLM")
    b.ts("Time to first token", [
        (f"histogram_quantile({q}, sum by (le, gen_ai_request_model) (rate(gen_ai_server_time_to_first_token_seconds_bucket{{{S}}}[{RI}])))",
         f"{{{{gen_ai_request_model}}}} p{int(q * 100)}") for q in (0.5, 0.95)], unit="s")
    b.ts("Time per output token", [
        (f"histogram_quantile({q}, sum by (le, gen_ai_request_model) (rate(gen_ai_server_time_per_output_token_seconds_bucket{{{S}}}[{RI}])))",
         f"{{{{gen_ai_request_model}}}} p{int(q * 100)}") for q in (0.5, 0.95)], unit="s")
    b.ts("Tokens per second",
         [(f"sum by (gen_ai_request_model, gen_ai_token_type) (rate(gen_ai_client_token_usage_sum{{{S}}}[{RI}]))",
           "{{gen_ai_request_model}} {{gen_ai_token_type}}")], unit="short")
    b.ts("Finish reasons",
         [(f"sum by (reason) (rate(modelwatch_llm_finish_reasons_total{{{S}}}[{RI}]))", "{{reason}}")], unit="reqps",
         description="length: answers cut at max_tokens; content_filter: refused by the provider.")
    b.row("Alerts")
    b.table("Sidecar alerts pending or firing", f"max by (alertname, severity, alertstate, pod) (modelwatch_alerts{{{S}}} == 1)")
    b.table("Prometheus alerts (fleet rules)",
            'max by (alertname, alertstate, severity, model, model_version) (ALERTS{alertname=~"Model.*|LLM.*|Modelwatch.*"})')
    b.row("Fleet (recording rules)")
    b.ts("Error ratio per job", [("job:http_server_request_errors:ratio_rate5m", "{{job}}")], unit="percentunit")
    b.ts("Time to first token p95 per model", [("model:gen_ai_server_time_to_first_token_seconds:p95_5m", "{{gen_ai_request_model}}")], unit="s")
    return b


def quality():
    b = Board("modelwatch-quality", "modelwatch / Model quality",
              "Realized quality once labels arrive, estimates before they do, per model version.", ["quality"],
              extra_vars=[("window", "Window", 'label_values(modelwatch_quality_accuracy_ratio{namespace=~"$namespace", model=~"$model"}, window)')])
    Q = M + ', window=~"$window"'
    b.stat("Accuracy", f"min by (model, model_version) (modelwatch_quality_accuracy_ratio{{{Q}}})", unit="percentunit", w=8)
    b.stat("Estimated accuracy (no labels needed)", f"min by (model, model_version) (modelwatch_quality_estimated_accuracy_ratio{{{Q}}})", unit="percentunit", w=8)
    b.stat("Predictions waiting for labels", f"sum(modelwatch_quality_pending{{{S}}})", w=8)
    b.row("Realized (labelled)")
    b.ts("Accuracy per version", [(f"modelwatch_quality_accuracy_ratio{{{Q}}}", "{{model}} {{model_version}} ({{window}})")], unit="percentunit")
    b.ts("Precision, recall, F1 (macro, or the positive class for binary models)", [
        (f'modelwatch_quality_{m}_ratio{{{Q}, average=~"macro|binary"}}', f"{m} {{{{model}}}} {{{{model_version}}}}")
        for m in ("precision", "recall", "f1")], unit="percentunit")
    b.ts("ROC AUC", [(f"modelwatch_quality_roc_auc_ratio{{{Q}}}", "{{model}} {{model_version}} {{average}}")], unit="percentunit")
    b.ts("Log loss", [(f"modelwatch_quality_log_loss{{{Q}}}", "{{model}} {{model_version}}")])
    b.bars("F1 per class", f'max by (class) (modelwatch_quality_f1_ratio{{{Q}, average="none"}})', "class", unit="percentunit")
    b.table("Confusion matrix (labelled rows in the time range)",
            f"sum by (model, model_version, actual, predicted) (increase(modelwatch_quality_confusion_total{{{M}}}[$__range]))")
    b.row("Estimated (before labels)")
    b.ts("Estimated vs realized accuracy", [
        (f"modelwatch_quality_estimated_accuracy_ratio{{{Q}}}", "estimated {{model}} {{model_version}}"),
        (f"modelwatch_quality_accuracy_ratio{{{Q}}}", "realized {{model}} {{model_version}}")], unit="percentunit")
    b.ts("Estimated precision, recall, F1", [
        (f'modelwatch_quality_estimated_{m}_ratio{{{Q}, average=~"macro|binary"}}', f"{m} {{{{model}}}} {{{{model_version}}}}")
        for m in ("precision", "recall", "f1")], unit="percentunit")
    b.ts("Estimation gap (|estimated - realized| accuracy)", [(f"modelwatch_quality_estimation_gap_ratio{{{Q}}}", "{{model}} {{model_version}}")], unit="percentunit")
    b.row("Labels")
    b.ts("Label lag", [
        (f"histogram_quantile({q}, sum by (le, model, model_version) (rate(modelwatch_quality_label_delay_seconds_bucket{{{M}}}[{RI}])))",
         f"p{int(q * 100)} {{{{model}}}} {{{{model_version}}}}") for q in (0.5, 0.95)], unit="s",
         description="Time from the prediction to its label.")
    b.ts("Predictions and labels per second", [
        (f"sum by (model, model_version) (rate(modelwatch_quality_predictions_total{{{M}}}[{RI}]))", "predictions {{model}} {{model_version}}"),
        (f"sum by (model, model_version) (rate(modelwatch_quality_labels_total{{{M}}}[{RI}]))", "labels {{model}} {{model_version}}")], unit="ops")
    b.ts("Feedback items by result", [(f"sum by (result) (rate(modelwatch_quality_feedback_items_total{{{S}}}[{RI}]))", "{{result}}")], unit="ops")
    b.row("Regression models")
    b.ts("MAE and RMSE", [(f"modelwatch_quality_mae{{{Q}}}", "MAE {{model}} {{model_version}}"),
                          (f"modelwatch_quality_rmse{{{Q}}}", "RMSE {{model}} {{model_version}}")])
    b.ts("R²", [(f"modelwatch_quality_r2{{{Q}}}", "{{model}} {{model_version}}")])
    b.row("Fleet (recording rules)")
    b.ts("Accuracy over the last hour, all replicas", [('model_version:modelwatch_quality_accuracy:ratio_rate1h{model=~"$model", model_version=~"$version"}', "{{model}} {{model_version}}")], unit="percentunit")
    b.ts("Labelled rows in the last hour", [('model_version:modelwatch_quality_labelled:increase1h{model=~"$model", model_version=~"$version"}', "{{model}} {{model_version}}")])
    return b


def drift():
    b = Board("modelwatch-drift", "modelwatch / Drift and data quality",
              "Features and predictions compared with the reference, and problems in the data.", ["drift"])
    b.stat("Drifted features", f"sum(modelwatch_drift_detected{{{M}}})", w=8)
    b.stat("Share of features drifted", f"max(modelwatch_drift_share_ratio{{{M}}})", unit="percentunit", w=8)
    b.stat("Dataset drift", f"max(modelwatch_drift_dataset{{{M}}})", w=8,
           description="1 when the share of drifted features reaches drift.dataset_share.")
    b.row("Per feature")
    b.bars("Drift score per feature (KS p-value: low means drift)",
           f'min by (feature) (modelwatch_drift_score{{{M}, method="ks"}})', "feature")
    b.bars("PSI per feature, last hour, all replicas",
           'max by (feature) (model_feature:modelwatch_drift_psi:1h{model=~"$model"})', "feature")
    b.ts("Drift score and threshold of drifted features", [
        (f"modelwatch_drift_score{{{M}}} and on (model, model_version, feature) (modelwatch_drift_detected{{{M}}} == 1)",
         "{{feature}} {{method}}")],
         description="Only features that currently drift.")
    b.ts("Share of features drifted", [(f"modelwatch_drift_share_ratio{{{M}}}", "{{model}} {{model_version}}")], unit="percentunit")
    b.row("Data quality")
    b.ts("Data-quality issues by kind", [
        (f"sum by (issue) (rate(modelwatch_data_quality_issues_total{{{M}}}[{RI}]))", "{{issue}}")], unit="ops",
        description="missing, non_finite, wrong_type, out_of_range (outside the reference's range), new_category, not_in_profile.")
    b.bars("Issues per feature in the time range",
           f"sum by (feature) (increase(modelwatch_data_quality_issues_total{{{M}}}[$__range]))", "feature")
    b.table("Constant features (one value in the whole window)", f"max by (model, feature) (modelwatch_data_quality_constant{{{M}}})")
    b.row("Anomalies")
    b.ts("Anomaly scores", [(f'max by (series, model) (modelwatch_anomaly_score{{{S}, model=~"$model|"}})', "{{series}} {{model}}")])
    b.ts("Anomaly events", [(f'sum by (series) (increase(modelwatch_anomaly_events_total{{{S}, model=~"$model|"}}[{RI}]))', "{{series}}")])
    return b


def resources():
    b = Board("modelwatch-resources", "modelwatch / Resources",
              "CPU, memory and limits of the pod's containers, GPUs, and the model server's own queue.", ["resources"])
    b.row("CPU and memory")
    b.ts("CPU by process", [
        (f"sum by (pod, modelwatch_process_role) (rate(process_cpu_time_seconds_total{{{S}}}[{RI}]))", "{{pod}} {{modelwatch_process_role}}")],
         unit="short", description="Cores used by modelwatch and by the model server (needs shareProcessNamespace to see the model).")
    b.ts("Memory by process", [
        (f"sum by (pod, modelwatch_process_role) (process_memory_usage_bytes{{{S}}})", "{{pod}} {{modelwatch_process_role}}")], unit="bytes")
    b.ts("Container CPU vs limit", [
        (f"sum by (pod) (rate(container_cpu_time_seconds_total{{{S}}}[{RI}]))", "used {{pod}}"),
        (f"max by (pod) (container_cpu_limit{{{S}}})", "limit {{pod}}")], unit="short")
    b.ts("CPU throttling", [
        (f"sum by (pod) (rate(container_cpu_throttled_periods_total{{{S}}}[{RI}])) / sum by (pod) (rate(container_cpu_periods_total{{{S}}}[{RI}]))",
         "{{pod}}")], unit="percentunit", description="Share of CFS periods in which the container was throttled.")
    b.ts("Container memory vs limit", [
        (f"max by (pod) (container_memory_usage_bytes{{{S}}})", "used {{pod}}"),
        (f"max by (pod) (container_memory_limit_bytes{{{S}}})", "limit {{pod}}")], unit="bytes")
    b.ts("Host CPU utilization", [(f"max by (pod) (system_cpu_utilization_ratio{{{S}}})", "{{pod}}")], unit="percentunit")
    b.row("GPU")
    b.ts("GPU utilization", [(f"max by (hw_name, hw_id) (hw_gpu_utilization_ratio{{{S}}})", "{{hw_name}} {{hw_id}}")], unit="percentunit")
    b.ts("GPU memory", [(f"max by (hw_id) (hw_gpu_memory_usage_bytes{{{S}}})", "used {{hw_id}}"),
                        (f"max by (hw_id) (hw_gpu_memory_limit_bytes{{{S}}})", "total {{hw_id}}")], unit="bytes")
    b.ts("GPU power", [(f"max by (hw_id) (hw_gpu_power_draw_watts{{{S}}})", "draw {{hw_id}}"),
                       (f"max by (hw_id) (hw_gpu_power_limit_watts{{{S}}})", "limit {{hw_id}}")], unit="watt")
    b.ts("GPU temperature", [(f"max by (hw_id) (hw_gpu_temperature_celsius{{{S}}})", "{{hw_id}}")], unit="celsius")
    b.row("Model server")
    b.ts("Requests running and waiting", [
        (f"sum by (engine) (modelwatch_engine_requests_running{{{S}}})", "running {{engine}}"),
        (f"sum by (engine) (modelwatch_engine_requests_waiting{{{S}}})", "waiting {{engine}}")])
    b.ts("KV cache usage", [(f"max by (pod, engine) (modelwatch_engine_kv_cache_usage_ratio{{{S}}})", "{{pod}} {{engine}}")], unit="percentunit")
    b.ts("Engine tokens per second", [
        (f"sum by (engine, gen_ai_token_type) (rate(modelwatch_engine_tokens_total{{{S}}}[{RI}]))", "{{engine}} {{gen_ai_token_type}}")])
    b.table("Versions", f"max by (pod, modelwatch_version, kernel_version, gpu_driver_version, cuda_version, model_server_name, model_server_version) (modelwatch_environment_info{{{S}}})")
    return b


def rollouts():
    b = Board("modelwatch-rollouts", "modelwatch / Rollouts",
              "A candidate model version against the baseline, and shadow traffic.", ["rollouts"],
              extra_vars=[("baseline", "Baseline", 'label_values(modelwatch_model_requests_total{namespace=~"$namespace", model=~"$model"}, model_version)'),
                          ("candidate", "Candidate", 'label_values(modelwatch_model_requests_total{namespace=~"$namespace", model=~"$model"}, model_version)')])
    V = S + ', model=~"$model", model_version=~"$baseline|$candidate"'
    b.ts("Requests per version", [(f"sum by (model_version) (rate(modelwatch_model_requests_total{{{V}}}[{RI}]))", "{{model_version}}")], unit="reqps")
    b.ts("Error ratio per version", [
        (f'(sum by (model_version) (rate(modelwatch_model_requests_total{{{V}, result="error"}}[{RI}])) or sum by (model_version) (rate(modelwatch_model_requests_total{{{V}}}[{RI}])) * 0)'
         f" / sum by (model_version) (rate(modelwatch_model_requests_total{{{V}}}[{RI}]))", "{{model_version}}")], unit="percentunit")
    b.ts("Latency p95 per version", [
        (f"histogram_quantile(0.95, sum by (le, model_version) (rate(modelwatch_model_request_duration_seconds_bucket{{{V}}}[{RI}])))",
         "{{model_version}}")], unit="s")
    b.ts("Accuracy per version", [(f"modelwatch_quality_accuracy_ratio{{{V}}}", "{{model_version}} ({{window}})")], unit="percentunit")
    b.bars("Accuracy: baseline and candidate", f"max by (model_version) (modelwatch_quality_accuracy_ratio{{{V}}})", "model_version", unit="percentunit")
    b.ts("Estimated accuracy per version", [(f"modelwatch_quality_estimated_accuracy_ratio{{{V}}}", "{{model_version}} ({{window}})")], unit="percentunit")
    b.row("Shadow traffic")
    b.ts("Shadow agreement", [
        (f'sum by (model) (rate(modelwatch_shadow_comparisons_total{{{S}, model=~"$model", agreement="true"}}[{RI}]))'
         f' / sum by (model) (rate(modelwatch_shadow_comparisons_total{{{S}, model=~"$model"}}[{RI}]))', "{{model}}")],
         unit="percentunit", description="Share of mirrored rows where the shadow's answer equals the primary's.")
    b.ts("Shadow requests by result", [(f"sum by (result) (rate(modelwatch_shadow_requests_total{{{S}}}[{RI}]))", "{{result}}")], unit="reqps")
    b.ts("Shadow minus primary latency", [
        (f'histogram_quantile({q}, sum by (le, model) (rate(modelwatch_shadow_latency_difference_seconds_bucket{{{S}, model=~"$model"}}[{RI}])))',
         f"p{int(q * 100)} {{{{model}}}}") for q in (0.5, 0.95)], unit="s")
    return b


BOARDS = [overview, quality, drift, resources, rollouts]


def render():
    return {f"modelwatch-{f.__name__}.json": json.dumps(f().json(), indent=2, ensure_ascii=False) + "\n" for f in BOARDS}


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    outs = [here, os.path.join(here, "..", "..", "helm", "modelwatch", "dashboards")]
    check = "--check" in sys.argv
    stale = []
    for name, text in render().items():
        for d in outs:
            path = os.path.join(d, name)
            if check:
                if not os.path.exists(path) or open(path).read() != text:
                    stale.append(os.path.relpath(path))
            else:
                os.makedirs(d, exist_ok=True)
                with open(path, "w") as f:
                    f.write(text)
    if stale:
        print("out of date (run python3 deploy/grafana/generate.py): " + ", ".join(stale))
        sys.exit(1)


if __name__ == "__main__":
    main()
