#!/usr/bin/env python3
"""Writes deploy/kibana/modelwatch.ndjson: Kibana 8 saved objects for
modelwatch's ECS JSON lines (ecs_logs): a data view over `modelwatch-*`, saved
searches of alerts, drift events, sampled requests and environment changes,
and a dashboard of the four. Import with Stack Management > Saved objects >
Import, or `POST /api/saved_objects/_import`.

Every field named here appears in modelwatch's ECS output; tests/it/kibana.rs
checks that against a captured output. `--check` fails if the file is stale.
"""
import json
import os
import sys

DATA_VIEW = "modelwatch-ecs"
MIGRATION = {"coreMigrationVersion": "8.8.0"}

SEARCHES = [
    ("modelwatch-alerts", "modelwatch: alerts", 'event.action : "modelwatch.alert"',
     ["labels.alertname", "labels.alertstate", "modelwatch.alert.label.severity", "modelwatch.alert.label.model",
      "modelwatch.alert.label.model_version", "modelwatch.alert.value", "modelwatch.alert.threshold",
      "orchestrator.resource.name", "message"]),
    ("modelwatch-drift-events", "modelwatch: drift events", 'event.action : "modelwatch.drift"',
     ["modelwatch.model", "modelwatch.model_version", "modelwatch.drift.share", "modelwatch.drift.dataset",
      "modelwatch.drift.started", "modelwatch.drift.stopped", "modelwatch.drift.features", "orchestrator.resource.name"]),
    ("modelwatch-sampled-requests", "modelwatch: sampled requests", 'event.action : "modelwatch.inference"',
     ["modelwatch.model", "modelwatch.model_version", "http.response.status_code", "modelwatch.request.id",
      "modelwatch.protocol", "orchestrator.resource.name", "message"]),
    ("modelwatch-environment-changes", "modelwatch: environment changes", 'event.action : "modelwatch.environment.change"',
     ["labels.component", "modelwatch.environment.after", "orchestrator.resource.name", "host.name", "message"]),
]


def objects():
    out = [{
        "type": "index-pattern", "id": DATA_VIEW, "managed": False, "references": [],
        "typeMigrationVersion": "8.0.0", **MIGRATION,
        "attributes": {
            "title": "modelwatch-*", "name": "modelwatch (ECS)", "timeFieldName": "@timestamp",
            "fields": "[]", "fieldAttrs": "{}", "fieldFormatMap": "{}", "runtimeFieldMap": "{}",
            "sourceFilters": "[]", "typeMeta": "{}", "allowNoIndex": True,
        },
    }]
    for sid, title, query, columns in SEARCHES:
        source = {"query": {"query": query, "language": "kuery"}, "filter": [],
                  "indexRefName": "kibanaSavedObjectMeta.searchSourceJSON.index"}
        out.append({
            "type": "search", "id": sid, "managed": False, "typeMigrationVersion": "8.0.0", **MIGRATION,
            "references": [{"type": "index-pattern", "id": DATA_VIEW, "name": "kibanaSavedObjectMeta.searchSourceJSON.index"}],
            "attributes": {
                "title": title, "description": "", "columns": columns, "sort": [["@timestamp", "desc"]],
                "grid": {}, "hideChart": False, "isTextBasedQuery": False, "timeRestore": False,
                "kibanaSavedObjectMeta": {"searchSourceJSON": json.dumps(source)},
            },
        })
    panels, refs = [], []
    for i, (sid, title, _, _) in enumerate(SEARCHES, start=1):
        panels.append({"type": "search", "panelIndex": str(i), "panelRefName": f"panel_{i}", "embeddableConfig": {},
                       "title": title.split(": ")[1].capitalize(),
                       "gridData": {"x": 0 if i % 2 else 24, "y": 15 * ((i - 1) // 2), "w": 24, "h": 15, "i": str(i)}})
        refs.append({"type": "search", "id": sid, "name": f"{i}:panel_{i}"})
    out.append({
        "type": "dashboard", "id": "modelwatch-dashboard", "managed": False, "typeMigrationVersion": "8.9.0", **MIGRATION,
        "references": refs,
        "attributes": {
            "title": "modelwatch", "description": "Alerts, drift events, sampled requests and environment changes from modelwatch sidecars (ecs_logs).",
            "panelsJSON": json.dumps(panels), "timeRestore": True, "timeFrom": "now-24h", "timeTo": "now",
            "refreshInterval": {"pause": False, "value": 60000},
            "optionsJSON": json.dumps({"useMargins": True, "syncColors": False, "syncCursor": True, "syncTooltips": False, "hidePanelTitles": False}),
            "kibanaSavedObjectMeta": {"searchSourceJSON": json.dumps({"query": {"query": "", "language": "kuery"}, "filter": []})},
            "version": 1,
        },
    })
    return out


def render():
    return "".join(json.dumps(o, sort_keys=True) + "\n" for o in objects())


if __name__ == "__main__":
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "modelwatch.ndjson")
    text = render()
    if "--check" in sys.argv:
        if not os.path.exists(path) or open(path).read() != text:
            print("deploy/kibana/modelwatch.ndjson is out of date: run python3 deploy/kibana/generate.py")
            sys.exit(1)
    else:
        open(path, "w").write(text)
