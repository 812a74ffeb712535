#!/usr/bin/env bash
# Checks deploy/'s monitoring files (run by .ci/run; needs promtool and python3):
# - prometheus-rules.yml is valid and its promtool unit tests pass;
# - grafana-dashboard.json is valid JSON with the ${datasource} and site variables, a
#   unit on every panel, and every query parses as PromQL;
# - every splitgate_* metric named in them is one the code records (src/), or is on
#   the PENDING list below.
set -euo pipefail
cd "$(dirname "$0")/.."

# Metrics named in the dashboard or the rules that the code does not record yet:
# being added (INTERFACE.md) or proposed for the alerts. When one lands in src/, drop
# it from here; a new name missing from src/ fails this check.
PENDING=(
)

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

promtool check rules deploy/prometheus-rules.yml
promtool test rules deploy/prometheus-rules.test.yml

python3 -m json.tool deploy/grafana-dashboard.json >/dev/null
# The dashboard's shape, and its queries (Grafana's variables replaced) written as
# recording rules so that promtool parses each one.
python3 - deploy/grafana-dashboard.json "$tmp/dashboard-queries.yml" <<'EOF'
import json, sys

dash = json.load(open(sys.argv[1]))
errors = []
variables = {v["name"]: v for v in dash["templating"]["list"]}
ds = variables.get("datasource")
if not ds or ds["type"] != "datasource" or ds["query"] != "prometheus":
    errors.append("no ${datasource} variable of type datasource (prometheus)")
if "site" not in variables:
    errors.append("no site variable")
ids, rules = set(), []
for panel in dash["panels"]:
    title = panel.get("title", "?")
    if panel["id"] in ids:
        errors.append(f"{title}: duplicate id {panel['id']}")
    ids.add(panel["id"])
    pos = panel["gridPos"]
    if pos["x"] + pos["w"] > 24:
        errors.append(f"{title}: wider than the grid")
    if panel["type"] == "row":
        continue
    if panel.get("datasource", {}).get("uid") != "${datasource}":
        errors.append(f"{title}: datasource is not ${{datasource}}")
    if not panel.get("fieldConfig", {}).get("defaults", {}).get("unit"):
        errors.append(f"{title}: no unit")
    if not panel.get("targets"):
        errors.append(f"{title}: no query")
    for target in panel.get("targets", []):
        expr = target.get("expr", "")
        if target.get("datasource", {}).get("uid") != "${datasource}":
            errors.append(f"{title} {target.get('refId')}: datasource is not ${{datasource}}")
        if "histogram_quantile" in expr and ("_bucket" not in expr or "rate(" not in expr):
            errors.append(f"{title}: histogram_quantile not over rate of _bucket")
        for var, value in (("$__rate_interval", "1m"), ("$__range", "1h"), ("$instance", ".*"), ("$site", ".*")):
            expr = expr.replace(var, value)
        if "$" in expr:
            errors.append(f"{title}: unknown variable in {expr}")
        rules.append({"record": f"dashboard:query_{len(rules)}", "expr": expr})
json.dump({"groups": [{"name": "dashboard", "rules": rules}]}, open(sys.argv[2], "w"), indent=1)
for e in errors:
    print("grafana-dashboard.json:", e, file=sys.stderr)
sys.exit(1 if errors else 0)
EOF
if ! out=$(promtool check rules "$tmp/dashboard-queries.yml" 2>&1); then
  echo "$out" >&2
  echo "grafana-dashboard.json: a query does not parse (rule N is the Nth query)" >&2
  exit 1
fi
echo "grafana-dashboard.json: ok"

recorded() { grep -rqF "\"$1\"" src; }
missing=0
for name in $(grep -ohE 'splitgate_[a-z0-9_]+' deploy/grafana-dashboard.json deploy/prometheus-rules.yml \
  deploy/prometheus-rules.test.yml | sort -u); do
  base=${name%_bucket}; base=${base%_count}; base=${base%_sum}
  if recorded "$name" || recorded "$base"; then
    continue
  fi
  if printf '%s\n' "${PENDING[@]}" | grep -qxF "$name"; then
    echo "note: $name is not recorded in src/ yet (PENDING)"
  else
    echo "error: $name is named in deploy/ but recorded nowhere in src/" >&2
    missing=1
  fi
done
for name in "${PENDING[@]}"; do
  if recorded "$name"; then
    echo "note: $name is now recorded in src/: drop it from PENDING in deploy/check.sh"
  fi
done
[ "$missing" = 0 ]
echo "deploy/: ok"
