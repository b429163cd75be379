"""Times rego-cpp (regopy) on the cases the regorus benchmark wrote (bench/policy.sh).

One interpreter per gate with the policy and data loaded once, as a service would keep them;
each decision sets the input and queries the gate.
"""
import json
import sys
import time

import regopy

policy_path, cases_path = sys.argv[1:3]
n = int(sys.argv[3]) if len(sys.argv) > 3 else 2000
policy = open(policy_path, encoding="utf-8").read()
for case in json.load(open(cases_path, encoding="utf-8")):
    rego = regopy.Interpreter()
    rego.add_module("rapha.rego", policy)
    rego.add_data_json(json.dumps(case["data"]))
    query = "data.rapha." + case["gate"]
    rego.set_input(case["input"])
    assert json.loads(str(rego.query(query)))["expressions"][0]["allow"] is True
    t = time.perf_counter()
    for _ in range(n):
        rego.set_input(case["input"])
        rego.query(query)
    secs = time.perf_counter() - t
    print(f"regopy  {case['gate']:<9} {n} decisions in {secs:.3f} s = {n / secs:.0f} decisions/s ({secs * 1e6 / n:.1f} us each)")
