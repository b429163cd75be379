#!/usr/bin/env bash
# Policy gate decisions per second: regorus in process (what the node runs) vs rego-cpp
# (regopy, the independent engine of the cross-check), same policy, data and inputs, one core.
# Not run in CI.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
out="$(mktemp -d)"
cargo bench -q -p rapha-policy --bench gates -- "$out/cases.json" | tee "$out/regorus.txt"
"$RAPHA_PYTHON" bench/policy_regopy.py policy/rapha.rego "$out/cases.json" 2000 | tee "$out/regopy.txt"
python3 - "$out" <<'PY'
import re, sys, pathlib
d = pathlib.Path(sys.argv[1])
rate = lambda f: {m[0]: float(m[1]) for m in re.findall(r"^\S+\s+(\w+)\s+\d+ decisions in \S+ s = (\d+) decisions/s", (d / f).read_text(), re.M)}
a, b = rate("regorus.txt"), rate("regopy.txt")
for gate in a:
    print(f"{gate}: regorus / regopy = {a[gate] / b[gate]:.2f}x decisions per second")
PY
rm -rf "$out"
