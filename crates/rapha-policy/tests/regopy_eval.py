"""Evaluates Rapha's policy gates with rego-cpp (regopy), an engine independent of regorus.

Usage: python regopy_eval.py POLICY.rego CASES.json OUT.json
CASES.json: [{"gate": "admission"|"final", "input": {...}, "data": {...}}, ...]
OUT.json:   [{"allow": bool, "reasons": [str]}, ...] in the same order, or {"error": str}.
"""
import json
import sys

import regopy


def main():
    policy_path, cases_path, out_path = sys.argv[1:4]
    with open(policy_path, encoding="utf-8") as f:
        policy = f.read()
    with open(cases_path, encoding="utf-8") as f:
        cases = json.load(f)
    out = []
    for case in cases:
        rego = regopy.Interpreter()
        rego.add_module("rapha.rego", policy)
        rego.add_data_json(json.dumps(case["data"]))
        rego.set_input(case["input"])
        try:
            result = rego.query("data.rapha." + case["gate"])
            value = json.loads(str(result))["expressions"][0]
            out.append({"allow": value["allow"], "reasons": sorted(value["reasons"])})
        except Exception as e:  # reported per case; the Rust side fails on it
            out.append({"error": repr(e)})
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
