#!/usr/bin/env python3
"""Writes modelwatch's Grafana dashboards (JSON, Grafana 10/11, schemaVersion 39)
into deploy/grafana/ and helm/modelwatch/dashboards/.

The dashboards are code: edit this file and run it (`python3
deploy/grafana/generate.py`); a test checks that the JSON files are what it
writes, and runs every PromQL expression below against a real Prometheus that
scraped a real modelwatch (tests/it/dashboards.rs).

Every dashboard has a Prometheus data-source variable and the namespace and
pod variables ("All" matches everything); a variable is shown only where its
panels use it. Quality and rollout panels show one window at a time (a
single-select variable, default the first); the drift and rollout dashboards
show one model (and the drift one one version) at a time; the rollout
dashboard's candidate defaults to the newest version in natural order. `namespace` and `pod`
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

# Colours that mean what they say.
GOOD, WARN, BAD, NEUTRAL = "green", "orange", "red", "blue"
# Custom units (Grafana's "suffix:" form) where Grafana has none.
CORES, TOKENS_PER_S, ROWS = "suffix: cores", "suffix: tokens/s", "suffix: rows"


def steps(*pairs):
    """Threshold steps: the first colour from -inf, then (value, colour) pairs."""
    out = [{"color": pairs[0], "value": None}]
    out += [{"color": c, "value": v} for v, c in pairs[1:]]
    return {"mode": "absolute", "steps": out}


# Stat thresholds.
HIGHER_IS_BETTER_RATIO = steps(BAD, (0.8, WARN), (0.9, GOOD))  # accuracy: red below 0.8
ZERO_IS_GOOD = steps(GOOD, (1, BAD))                           # counts of bad things
ERROR_RATIO = steps(GOOD, (0.01, WARN), (0.05, BAD))
UP = steps(BAD, (1, GOOD))                                     # 0 red, 1 green
NEUTRAL_STEPS = steps(NEUTRAL)                                 # figures with no good or bad
CAUSE_SCORE = steps(GOOD, (0.5, BAD))                          # a diagnosis's cause: a verdict from 0.5


def var(name, label, query, multi=True, sort=1):
    """A query variable. Multi-select ones default to All; single-select ones
    to the first value Grafana lists (sort 7: natural ascending, 8: natural
    descending, so v10 comes after v9)."""
    v = {"name": name, "label": label, "type": "query", "datasource": DS,
         "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery", "qryType": 1},
         "definition": query, "refresh": 2, "includeAll": multi, "multi": multi, "options": [], "sort": sort,
         "hide": 0, "regex": "", "skipUrlSync": False}
    if multi:
        v["allValue"] = ".*"
        v["current"] = {"selected": True, "text": ["All"], "value": ["$__all"]}
    else:
        v["current"] = {}
    return v


NAMESPACE = var("namespace", "Namespace", "label_values(modelwatch_upstream_up, namespace)")
POD = var("pod", "Pod", 'label_values(modelwatch_upstream_up{namespace=~"$namespace"}, pod)')
VERSIONS_OF_MODEL = 'label_values(modelwatch_model_requests_total{namespace=~"$namespace", model=~"$model"}, model_version)'


def model_var(multi=True):
    return var("model", "Model", 'label_values(modelwatch_model_requests_total{namespace=~"$namespace", model!="unknown"}, model)', multi)


def version_var(multi=True):
    return var("version", "Version", VERSIONS_OF_MODEL, multi, sort=7)


def window_var():
    return var("window", "Window",
               'label_values(modelwatch_quality_accuracy_ratio{namespace=~"$namespace", model=~"$model"}, window)',
               multi=False)


class Board:
    def __init__(self, uid, title, description, tags, variables):
        self.uid, self.title, self.description = uid, title, description
        self.tags = ["modelwatch"] + list(tags)
        self.panels = []
        self.next_id = 1
        self.x = 0
        self.y = 0
        self.row_h = 0
        self.variables = variables

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

    def add(self, kind, title, targets, unit, w=12, h=8, description="", options=None, field=None, thresholds=None,
            **extra):
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
        p["fieldConfig"]["defaults"]["unit"] = unit
        if thresholds is not None:
            p["fieldConfig"]["defaults"]["thresholds"] = thresholds
            p["fieldConfig"]["defaults"]["color"] = (
                {"mode": "thresholds"} if thresholds is not NEUTRAL_STEPS else {"mode": "fixed", "fixedColor": NEUTRAL})
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

    def ts(self, title, targets, unit, **kw):
        custom = {"lineWidth": 1, "fillOpacity": 10, "showPoints": "never"}
        return self.add("timeseries", title, targets, unit, field={"custom": custom}, **kw)

    def stat(self, title, expr, unit, thresholds, w=6, h=4, legend="", **kw):
        return self.add("stat", title, [(expr, legend)], unit, w=w, h=h, thresholds=thresholds,
                        options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                                 "colorMode": "value", "graphMode": "none", "textMode": "value_and_name"}, **kw)

    def bars(self, title, expr, x_field, unit, **kw):
        return self.add("barchart", title, [expr], unit,
                        options={"xField": x_field, "orientation": "horizontal", "showValue": "auto",
                                 "legend": {"showLegend": False, "displayMode": "list", "placement": "bottom"}},
                        transformations=[{"id": "organize", "options": {"excludeByName": {"Time": True}}}], **kw)

    def table(self, title, expr, unit, **kw):
        return self.add("table", title, [expr], unit, options={"showHeader": True},
                        transformations=[{"id": "organize", "options": {"excludeByName": {"Time": True}}}], **kw)

    def heatmap(self, title, expr, **kw):
        return self.add("heatmap", title, [expr], "s",
                        options={"calculate": False, "yAxis": {"unit": "s"}, "cellGap": 1,
                                 "color": {"mode": "scheme", "scheme": "Oranges", "steps": 64},
                                 "rowsFrame": {"layout": "auto"}, "tooltip": {"mode": "single", "yHistogram": True}},
                        **kw)

    def json(self):
        titles = [p["title"] for p in self.panels if p["type"] != "row"]
        dup = sorted({t for t in titles if titles.count(t) > 1})
        assert not dup, f"{self.uid}: panel titles repeat: {dup}"
        variables = [
            {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
             "current": {}, "hide": 0, "refresh": 1, "regex": "", "options": [], "skipUrlSync": False},
        ] + self.variables
        return {
            "uid": self.uid, "title": self.title, "description": self.description, "tags": self.tags,
            "schemaVersion": 39, "version": 1, "editable": True, "graphTooltip": 1,
            # The demo and a fresh install have minutes of data, not hours.
            "time": {"from": "now-30m", "to": "now"}, "refresh": "10s", "timezone": "browser",
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
              "Traffic, errors and latency through modelwatch, LLM figures, alerts.", ["overview"],
              [NAMESPACE, POD, model_var(), version_var()])
    b.stat("Model server up", f"min(modelwatch_upstream_up{{{S}}})", "none", UP,
           description="1 when every selected sidecar reaches its model server; 0 (red) when one cannot.")
    b.stat("Requests per second", f"sum(rate(http_server_request_duration_seconds_count{{{S}}}[{RI}]))", "reqps",
           NEUTRAL_STEPS)
    b.stat("Errors (5xx or no answer)",
           f'(sum(rate(http_server_request_duration_seconds_count{{{S}, error_type!=""}}[{RI}])) or vector(0))'
           f" / sum(rate(http_server_request_duration_seconds_count{{{S}}}[{RI}]))", "percentunit", ERROR_RATIO,
           description="Orange from 1%, red from 5% (the ModelErrorRateHigh rule).")
    b.stat("Alerts firing in sidecars", f'sum(modelwatch_alerts{{{S}, alertstate="firing"}}) or vector(0)', "none",
           ZERO_IS_GOOD, description="Series firing under the rules evaluated inside modelwatch (alerts.rules).")
    b.row("Traffic")
    b.ts("Requests per second by route and status",
         [(f"sum by (http_route, http_response_status_code) (rate(http_server_request_duration_seconds_count{{{S}}}[{RI}]))",
           "{{http_route}} {{http_response_status_code}}")], "reqps")
    b.ts("Latency through modelwatch",
         [(f"histogram_quantile({q}, sum by (le) (rate(http_server_request_duration_seconds_bucket{{{S}}}[{RI}])))", f"p{int(q * 100)}")
          for q in (0.5, 0.95, 0.99)], "s")
    b.heatmap("Latency distribution", f"sum by (le) (increase(http_server_request_duration_seconds_bucket{{{S}}}[{RI}]))")
    b.ts("Model server errors by kind",
         [(f"sum by (error_type) (rate(modelwatch_upstream_errors_total{{{S}}}[{RI}]))", "{{error_type}}")], "reqps",
         description="Refused or timed-out connections, response timeouts, resets: what clients saw as 502/504.")
    b.ts("Requests per model version (sampled)",
         [(f"sum by (model, model_version, result) (rate(modelwatch_model_requests_total{{{M}}}[{RI}]))",
           "{{model}} {{model_version}} {{result}}")], "reqps",
         description="Failed requests count under the model and version they were for (path, headers or default).")
    b.ts("Samples taken, analysed and dropped",
         [(f"sum(rate(modelwatch_samples_taken_total{{{S}}}[{RI}]))", "taken"),
          (f"sum(rate(modelwatch_samples_analyzed_total{{{S}}}[{RI}]))", "analysed"),
          (f"sum by (reason) (rate(modelwatch_samples_dropped_total{{{S}}}[{RI}]))", "dropped {{reason}}")],
         "ops", description="Drops mean monitoring fell behind; traffic is never slowed for it.")
    b.row("LLM")
    b.ts("Time to first token", [
        (f"histogram_quantile({q}, sum by (le, gen_ai_request_model) (rate(gen_ai_server_time_to_first_token_seconds_bucket{{{S}}}[{RI}])))",
         f"{{{{gen_ai_request_model}}}} p{int(q * 100)}") for q in (0.5, 0.95)], "s")
    b.ts("Time per output token", [
        (f"histogram_quantile({q}, sum by (le, gen_ai_request_model) (rate(gen_ai_server_time_per_output_token_seconds_bucket{{{S}}}[{RI}])))",
         f"{{{{gen_ai_request_model}}}} p{int(q * 100)}") for q in (0.5, 0.95)], "s")
    b.ts("Tokens per second",
         [(f"sum by (gen_ai_request_model, gen_ai_token_type) (rate(gen_ai_client_token_usage_sum{{{S}}}[{RI}]))",
           "{{gen_ai_request_model}} {{gen_ai_token_type}}")], TOKENS_PER_S)
    b.ts("Finish reasons",
         [(f"sum by (reason) (rate(modelwatch_llm_finish_reasons_total{{{S}}}[{RI}]))", "{{reason}}")], "reqps",
         description="length: answers cut at max_tokens; content_filter: refused by the provider.")
    b.row("Alerts")
    b.table("Sidecar alerts pending or firing",
            f"max by (alertname, severity, alertstate, pod) (modelwatch_alerts{{{S}}} > 0)", "none",
            description="Series per rule in each state, per pod.")
    b.table("Prometheus alerts (fleet rules)",
            'max by (alertname, alertstate, severity, model, model_version) (ALERTS{alertname=~"Model.*|LLM.*|Modelwatch.*"})',
            "none")
    b.row("Fleet (recording rules)")
    b.ts("Error ratio per job", [("job:http_server_request_errors:ratio_rate5m", "{{job}}")], "percentunit")
    b.ts("Time to first token p95 per model", [("model:gen_ai_server_time_to_first_token_seconds:p95_5m", "{{gen_ai_request_model}}")], "s")
    return b


def quality():
    b = Board("modelwatch-quality", "modelwatch / Model quality",
              "Realized quality once labels arrive, estimates before they do, per model version, one window at a time.",
              ["quality"], [NAMESPACE, POD, model_var(), version_var(), window_var()])
    Q = M + ', window="$window"'
    b.stat("Accuracy ($window)", f"min by (model, model_version) (modelwatch_quality_accuracy_ratio{{{Q}}})", "percentunit",
           HIGHER_IS_BETTER_RATIO, w=8, legend="{{model}} {{model_version}}",
           description="Red below 80%, orange below 90%: set the steps to your model's own bar.")
    b.stat("Estimated accuracy ($window, no labels needed)",
           f"min by (model, model_version) (modelwatch_quality_estimated_accuracy_ratio{{{Q}}})", "percentunit",
           HIGHER_IS_BETTER_RATIO, w=8, legend="{{model}} {{model_version}}")
    b.stat("Predictions waiting for labels", f"sum by (model, model_version) (modelwatch_quality_pending{{{M}}})", ROWS,
           NEUTRAL_STEPS, w=8, legend="{{model}} {{model_version}}")
    b.row("Realized (labelled)")
    b.ts("Accuracy per version", [(f"modelwatch_quality_accuracy_ratio{{{Q}}}", "{{model}} {{model_version}}")], "percentunit")
    b.ts("Precision, recall, F1 (macro, or the positive class for binary models)", [
        (f'modelwatch_quality_{m}_ratio{{{Q}, average=~"macro|binary"}}', f"{m} {{{{model}}}} {{{{model_version}}}}")
        for m in ("precision", "recall", "f1")], "percentunit")
    b.ts("ROC AUC", [(f"modelwatch_quality_roc_auc_ratio{{{Q}}}", "{{model}} {{model_version}} {{average}}")], "percentunit")
    b.ts("Log loss", [(f"modelwatch_quality_log_loss{{{Q}}}", "{{model}} {{model_version}}")], "none")
    b.table("F1 per class and version", f'max by (model, model_version, class) (modelwatch_quality_f1_ratio{{{Q}, average="none"}})',
            "percentunit")
    b.table("Confusion matrix (labelled rows in the time range)",
            f"sum by (model, model_version, actual, predicted) (increase(modelwatch_quality_confusion_total{{{M}}}[$__range]))",
            ROWS)
    b.row("Estimated (before labels)")
    b.ts("Estimated vs realized accuracy", [
        (f"modelwatch_quality_estimated_accuracy_ratio{{{Q}}}", "estimated {{model}} {{model_version}}"),
        (f"modelwatch_quality_accuracy_ratio{{{Q}}}", "realized {{model}} {{model_version}}")], "percentunit")
    b.ts("Estimated precision, recall, F1", [
        (f'modelwatch_quality_estimated_{m}_ratio{{{Q}, average=~"macro|binary"}}', f"{m} {{{{model}}}} {{{{model_version}}}}")
        for m in ("precision", "recall", "f1")], "percentunit")
    b.ts("Estimation gap (|estimated - realized| accuracy)", [(f"modelwatch_quality_estimation_gap_ratio{{{Q}}}", "{{model}} {{model_version}}")], "percentunit")
    b.row("Labels")
    b.ts("Label lag", [
        (f"histogram_quantile({q}, sum by (le, model, model_version) (rate(modelwatch_quality_label_delay_seconds_bucket{{{M}}}[{RI}])))",
         f"p{int(q * 100)} {{{{model}}}} {{{{model_version}}}}") for q in (0.5, 0.95)], "s",
         description="Time from the prediction to its label.")
    b.ts("Predictions and labels per second", [
        (f"sum by (model, model_version) (rate(modelwatch_quality_predictions_total{{{M}}}[{RI}]))", "predictions {{model}} {{model_version}}"),
        (f"sum by (model, model_version) (rate(modelwatch_quality_labels_total{{{M}}}[{RI}]))", "labels {{model}} {{model_version}}")], "ops")
    b.ts("Feedback items by result", [(f"sum by (result) (rate(modelwatch_quality_feedback_items_total{{{S}}}[{RI}]))", "{{result}}")], "ops")
    b.row("Diagnosis (GET /v1/diagnose, over the first quality window)")
    b.stat("Cause score now", f"max by (model, model_version, cause) (modelwatch_diagnosis_cause{{{M}}})", "none",
           CAUSE_SCORE, w=12, h=6, legend="{{model}} {{model_version}} {{cause}}",
           description="Data, model or environment, 0 to 1: at 0.5 and above the cause can be the verdict. "
                       "`modelwatch diagnose` or /v1/diagnose gives the findings behind it (docs/diagnosis.md).")
    b.ts("Cause scores over time", [(f"modelwatch_diagnosis_cause{{{M}}}", "{{model}} {{model_version}} {{cause}}")], "none",
         description="When a score rose is when to look: the findings name the features, segment, version or event.")
    b.row("Regression models")
    b.ts("MAE and RMSE", [(f"modelwatch_quality_mae{{{Q}}}", "MAE {{model}} {{model_version}}"),
                          (f"modelwatch_quality_rmse{{{Q}}}", "RMSE {{model}} {{model_version}}")], "none",
         description="In the unit of the target.")
    b.ts("R²", [(f"modelwatch_quality_r2{{{Q}}}", "{{model}} {{model_version}}")], "none")
    b.row("Fleet (recording rules)")
    b.ts("Accuracy over the last hour, all replicas", [('model_version:modelwatch_quality_accuracy:ratio_rate1h{model=~"$model", model_version=~"$version"}', "{{model}} {{model_version}}")], "percentunit")
    b.ts("Labelled rows in the last hour", [('model_version:modelwatch_quality_labelled:increase1h{model=~"$model", model_version=~"$version"}', "{{model}} {{model_version}}")], ROWS)
    return b


# p-value tests flag drift when the score is below the threshold; distances when at or above it.
P_TESTS = 'method=~"ks|chi2"'
DISTANCES = 'method!~"ks|chi2"'


def drift():
    b = Board("modelwatch-drift", "modelwatch / Drift and data quality",
              "One model version's features and predictions compared with the reference, and problems in the data.",
              ["drift"], [NAMESPACE, POD, model_var(multi=False), version_var(multi=False)])
    b.stat("Drifted features", f"sum by (model, model_version) (modelwatch_drift_detected{{{M}}})", "none",
           steps(GOOD, (1, WARN)), w=8, legend="{{model}} {{model_version}}")
    b.stat("Share of features drifted", f"max by (model, model_version) (modelwatch_drift_share_ratio{{{M}}})",
           "percentunit", steps(GOOD, (0.1, WARN), (0.5, BAD)), w=8, legend="{{model}} {{model_version}}")
    b.stat("Dataset drift", f"max by (model, model_version) (modelwatch_drift_dataset{{{M}}})", "none", ZERO_IS_GOOD,
           w=8, legend="{{model}} {{model_version}}",
           description="1 (red) when the share of drifted features reaches drift.dataset_share.")
    b.row("Per feature, each with its own method")
    b.ts("p-value tests (ks, chi2): below the threshold means drift", [
        (f"max by (feature, method) (modelwatch_drift_score{{{M}, {P_TESTS}}})", "{{feature}} ({{method}})"),
        (f"max by (method) (modelwatch_drift_threshold{{{M}, {P_TESTS}}})", "threshold ({{method}})")], "none",
        description="Each feature's test as drift.numeric_method / categorical_method chose it (auto: by reference size).")
    b.ts("Distances (wasserstein, psi, jensenshannon, hellinger): at or above the threshold means drift", [
        (f"max by (feature, method) (modelwatch_drift_score{{{M}, {DISTANCES}}})", "{{feature}} ({{method}})"),
        (f"max by (method) (modelwatch_drift_threshold{{{M}, {DISTANCES}}})", "threshold ({{method}})")], "none",
        description="auto switches numeric features to Wasserstein and categorical ones to Jensen-Shannon above drift.large_sample reference rows.")
    b.bars("Test statistic per feature (KS D, chi-squared, or the distance)",
           f"max by (feature) (modelwatch_drift_statistic{{{M}}})", "feature", "none",
           description="Ranks the features that drift: where every p-value is tiny, the statistic still orders them.")
    b.bars("PSI per feature, last hour, all replicas",
           'max by (feature) (model_feature:modelwatch_drift_psi:1h{model=~"$model"})', "feature", "none")
    b.table("Drifted features now", f"max by (feature, method) (modelwatch_drift_score{{{M}}}) "
            f"and on (feature) (max by (feature) (modelwatch_drift_detected{{{M}}}) == 1)", "none",
            description="Only features that currently drift, with their score.")
    b.ts("Share of features drifted over time", [(f"modelwatch_drift_share_ratio{{{M}}}", "{{model}} {{model_version}}")], "percentunit")
    b.row("Data quality")
    b.ts("Data-quality issues by kind", [
        (f"sum by (issue) (rate(modelwatch_data_quality_issues_total{{{M}}}[{RI}]))", "{{issue}}")], "ops",
        description="missing, non_finite, wrong_type, out_of_range (outside the reference's range), new_category, not_in_profile.")
    b.bars("Issues per feature in the time range",
           f"sum by (feature) (increase(modelwatch_data_quality_issues_total{{{M}}}[$__range]))", "feature", ROWS)
    b.table("Constant features (one value in the whole window)",
            f"max by (model, model_version, feature) (modelwatch_data_quality_constant{{{M}}}) == 1", "none")
    b.row("Anomalies")
    b.ts("Anomaly scores", [(f'max by (series, model) (modelwatch_anomaly_score{{{S}, model=~"$model|"}})', "{{series}} {{model}}")], "none")
    b.ts("Anomaly events", [(f'sum by (series) (increase(modelwatch_anomaly_events_total{{{S}, model=~"$model|"}}[{RI}]))', "{{series}}")], "none")
    return b


def resources():
    b = Board("modelwatch-resources", "modelwatch / Resources",
              "CPU, memory and limits of the pod's containers, GPUs, and the model server's own queue.", ["resources"],
              [NAMESPACE, POD])
    b.row("CPU and memory")
    b.ts("CPU by process", [
        (f"sum by (pod, modelwatch_process_role) (rate(process_cpu_time_seconds_total{{{S}}}[{RI}]))", "{{pod}} {{modelwatch_process_role}}")],
         CORES, description="Cores used by modelwatch and by the model server (needs shareProcessNamespace to see the model).")
    b.ts("Memory by process", [
        (f"sum by (pod, modelwatch_process_role) (process_memory_usage_bytes{{{S}}})", "{{pod}} {{modelwatch_process_role}}")], "bytes")
    b.ts("Container CPU vs limit", [
        (f"sum by (pod) (rate(container_cpu_time_seconds_total{{{S}}}[{RI}]))", "used {{pod}}"),
        (f"max by (pod) (container_cpu_limit{{{S}}})", "limit {{pod}}")], CORES)
    b.ts("CPU throttling", [
        (f"sum by (pod) (rate(container_cpu_throttled_periods_total{{{S}}}[{RI}])) / sum by (pod) (rate(container_cpu_periods_total{{{S}}}[{RI}]))",
         "{{pod}}")], "percentunit", description="Share of CFS periods in which the container was throttled.")
    b.ts("Container memory vs limit", [
        (f"max by (pod) (container_memory_usage_bytes{{{S}}})", "used {{pod}}"),
        (f"max by (pod) (container_memory_limit_bytes{{{S}}})", "limit {{pod}}")], "bytes")
    b.ts("Host CPU utilization", [(f"max by (pod) (system_cpu_utilization_ratio{{{S}}})", "{{pod}}")], "percentunit")
    b.row("GPU")
    b.ts("GPU utilization", [(f"max by (hw_name, hw_id) (hw_gpu_utilization_ratio{{{S}}})", "{{hw_name}} {{hw_id}}")], "percentunit")
    b.ts("GPU memory", [(f"max by (hw_id) (hw_gpu_memory_usage_bytes{{{S}}})", "used {{hw_id}}"),
                        (f"max by (hw_id) (hw_gpu_memory_limit_bytes{{{S}}})", "total {{hw_id}}")], "bytes")
    b.ts("GPU power", [(f"max by (hw_id) (hw_gpu_power_draw_watts{{{S}}})", "draw {{hw_id}}"),
                       (f"max by (hw_id) (hw_gpu_power_limit_watts{{{S}}})", "limit {{hw_id}}")], "watt")
    b.ts("GPU temperature", [(f"max by (hw_id) (hw_gpu_temperature_celsius{{{S}}})", "{{hw_id}}")], "celsius")
    b.row("Model server")
    b.ts("Requests running and waiting", [
        (f"sum by (engine) (modelwatch_engine_requests_running{{{S}}})", "running {{engine}}"),
        (f"sum by (engine) (modelwatch_engine_requests_waiting{{{S}}})", "waiting {{engine}}")], "suffix: requests")
    b.ts("KV cache usage", [(f"max by (pod, engine) (modelwatch_engine_kv_cache_usage_ratio{{{S}}})", "{{pod}} {{engine}}")], "percentunit")
    b.ts("Engine tokens per second", [
        (f"sum by (engine, gen_ai_token_type) (rate(modelwatch_engine_tokens_total{{{S}}}[{RI}]))", "{{engine}} {{gen_ai_token_type}}")],
        TOKENS_PER_S)
    b.table("Versions", f"max by (pod, modelwatch_version, kernel_version, gpu_driver_version, cuda_version, model_server_name, model_server_version) (modelwatch_environment_info{{{S}}})",
            "none")
    return b


def rollouts():
    b = Board("modelwatch-rollouts", "modelwatch / Rollouts",
              "A candidate model version against the baseline (one window at a time), and shadow traffic.", ["rollouts"],
              [NAMESPACE, POD, model_var(multi=False),
               var("baseline", "Baseline", VERSIONS_OF_MODEL, multi=False, sort=7),
               var("candidate", "Candidate (newest first)", VERSIONS_OF_MODEL, multi=False, sort=8),
               window_var()])
    SM = S + ', model=~"$model"'
    side = {"baseline": SM + ', model_version="$baseline"', "candidate": SM + ', model_version="$candidate"'}

    def both(expr, legend):
        return [(expr.format(sel=side[k]), f"{k} {legend}") for k in ("baseline", "candidate")]

    b.ts("Requests per version", both("sum by (model_version) (rate(modelwatch_model_requests_total{{{sel}}}[" + RI + "]))",
                                      "{{model_version}}"), "reqps")
    b.ts("Error ratio per version", both(
        '(sum by (model_version) (rate(modelwatch_model_requests_total{{{sel}, result="error"}}[' + RI + ']))'
        ' or sum by (model_version) (rate(modelwatch_model_requests_total{{{sel}}}[' + RI + '])) * 0)'
        ' / sum by (model_version) (rate(modelwatch_model_requests_total{{{sel}}}[' + RI + ']))', "{{model_version}}"),
        "percentunit", description="Failed requests count under the version they were sent to.")
    b.ts("Latency p95 per version", both(
        "histogram_quantile(0.95, sum by (le, model_version) (rate(modelwatch_model_request_duration_seconds_bucket{{{sel}}}[" + RI + "])))",
        "{{model_version}}"), "s")
    b.ts("Accuracy per version ($window)", both('max by (model_version) (modelwatch_quality_accuracy_ratio{{{sel}, window="$window"}})',
                                                "{{model_version}}"), "percentunit")
    b.stat("Baseline accuracy ($baseline, $window)",
           f'max by (model_version) (modelwatch_quality_accuracy_ratio{{{side["baseline"]}, window="$window"}})',
           "percentunit", HIGHER_IS_BETTER_RATIO, legend="baseline {{model_version}}")
    b.stat("Candidate accuracy ($candidate, $window)",
           f'max by (model_version) (modelwatch_quality_accuracy_ratio{{{side["candidate"]}, window="$window"}})',
           "percentunit", HIGHER_IS_BETTER_RATIO, legend="candidate {{model_version}}")
    b.ts("Estimated accuracy per version ($window)", both(
        'max by (model_version) (modelwatch_quality_estimated_accuracy_ratio{{{sel}, window="$window"}})', "{{model_version}}"),
        "percentunit")
    b.row("Shadow traffic")
    b.ts("Shadow agreement", [
        (f'sum by (model) (rate(modelwatch_shadow_comparisons_total{{{SM}, agreement="true"}}[{RI}]))'
         f' / sum by (model) (rate(modelwatch_shadow_comparisons_total{{{SM}}}[{RI}]))', "{{model}}")],
         "percentunit", description="Share of mirrored rows where the shadow's answer equals the primary's.")
    b.ts("Shadow requests by result", [(f"sum by (result) (rate(modelwatch_shadow_requests_total{{{S}}}[{RI}]))", "{{result}}")], "reqps")
    b.ts("Shadow minus primary latency", [
        (f'histogram_quantile({q}, sum by (le, model) (rate(modelwatch_shadow_latency_difference_seconds_bucket{{{SM}}}[{RI}])))',
         f"p{int(q * 100)} {{{{model}}}}") for q in (0.5, 0.95)], "s")
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
