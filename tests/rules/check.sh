#!/usr/bin/env bash
# Checks the Prometheus rules in docs/ops/alerts.yml and runs their unit tests
# (tests/rules/alerts_test.yml), and that every metric family in src/ is
# described in docs/OPERATIONS.md. Needs promtool (Debian package prometheus).
# Runs from anywhere; exits non-zero on any failure.
#
#   tests/rules/check.sh
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."

rules=docs/ops/alerts.yml
tests=tests/rules/alerts_test.yml

command -v promtool >/dev/null || { echo "check.sh: promtool not found (apt-get install prometheus)" >&2; exit 2; }

promtool check rules "$rules"
promtool test rules "$tests"

# Every alert defined (commented-out pending ones excluded) must have a test
# where it fires and one where it must not (exp_alerts: []).
alerts=$(sed -n 's/^[[:space:]]*- alert:[[:space:]]*\([A-Za-z0-9_]*\).*/\1/p' "$rules")
[ -n "$alerts" ] || { echo "check.sh: no alerts found in $rules" >&2; exit 1; }
coverage=$(awk '
  /^[[:space:]]*alertname:/ { name = $2; next }
  /^[[:space:]]*exp_alerts:/ && name != "" {
    if ($0 ~ /\[\][[:space:]]*$/) neg[name] = 1; else pos[name] = 1
    name = ""
  }
  END { for (n in pos) print n, "fires"; for (n in neg) print n, "silent" }' "$tests")
missing=0
for a in $alerts; do
  for kind in fires silent; do
    if ! grep -qx "$a $kind" <<<"$coverage"; then
      echo "check.sh: $a has no test case where it $kind" >&2
      missing=1
    fi
  done
done
[ "$missing" -eq 0 ] || exit 1
echo "check.sh: $(wc -w <<<"$alerts") alerts, each tested firing and silent"

# Every metric family the code declares is described in docs/OPERATIONS.md.
families=$(grep -rhoE 'metric_(counter|gauge|histogram)\("[a-z_]+"' src | sed -E 's/.*\("([a-z_]+)"/\1/' | sort -u)
[ -n "$families" ] || { echo "check.sh: no metric families found in src/" >&2; exit 1; }
for m in $families; do
  grep -q "\`$m\`" docs/OPERATIONS.md || { echo "check.sh: metric $m is not described in docs/OPERATIONS.md" >&2; missing=1; }
done
[ "$missing" -eq 0 ] || exit 1
echo "check.sh: $(wc -w <<<"$families") metric families, each described in docs/OPERATIONS.md"
