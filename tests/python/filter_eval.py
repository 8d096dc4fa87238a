#!/usr/bin/env python3
"""An independent evaluation of faissx's filter language, for tests/cli/filter.rs.

Usage: filter_eval.py ROWS.jsonl FILTERS.json  ->  prints a JSON list, for each filter, of the
0-based rows (one JSON object per line of ROWS.jsonl) it matches.

Written from the language's documentation (MongoDB semantics), in plain Python, sharing no
code with faissx: a missing or null field fails every comparison and so matches the negations
($ne, $nin, $not); a list matches when any element does ($ne / $nin: when none does); a
dotted path descends into objects, and through lists of objects; $exists is true for a present,
non-null value (an empty list exists); {"f": null} matches a missing or null field.
"""
import json
import sys

MISSING = object()


def values_at(doc, path):
    """The values a dotted path reaches in doc: lists along the way fan out."""
    cur = [doc]
    for part in path.split("."):
        nxt = []
        for v in cur:
            if isinstance(v, dict):
                if part in v:
                    nxt.append(v[part])
            elif isinstance(v, list):
                nxt.extend(x[part] for x in v if isinstance(x, dict) and part in x)
        cur = nxt
    return cur


def scalars(vals):
    """Leaf values to compare: list elements, and the non-list values."""
    out = []
    for v in vals:
        if isinstance(v, list):
            out.extend(v)
        else:
            out.append(v)
    return out


def comparable(a, b):
    num = lambda x: isinstance(x, (int, float)) and not isinstance(x, bool)
    if num(a) and num(b):
        return True
    return type(a) is type(b) and isinstance(a, (str, bool))


def cmp(op, a, b):
    if a is None or not comparable(a, b):
        return False
    if op == "$eq":
        return a == b
    if op == "$gt":
        return a > b
    if op == "$gte":
        return a >= b
    if op == "$lt":
        return a < b
    if op == "$lte":
        return a <= b
    raise ValueError(op)


def field_matches(doc, path, cond):
    vals = values_at(doc, path)
    leaves = scalars(vals)
    if not isinstance(cond, dict) or not any(k.startswith("$") for k in cond):
        cond = {"$eq": cond}
    for op, arg in cond.items():
        if op == "$eq" and arg is None:
            ok = all(v is None for v in vals)
        elif op in ("$eq", "$gt", "$gte", "$lt", "$lte"):
            ok = any(cmp(op, v, arg) for v in leaves)
        elif op == "$ne":
            ok = not any(cmp("$eq", v, arg) for v in leaves)
        elif op == "$in":
            ok = any(cmp("$eq", v, a) for v in leaves for a in arg)
        elif op == "$nin":
            ok = not any(cmp("$eq", v, a) for v in leaves for a in arg)
        elif op == "$exists":
            ok = any(v is not None for v in vals) == arg
        elif op == "$not":
            ok = not field_matches(doc, path, arg)
        else:
            raise ValueError(op)
        if not ok:
            return False
    return True


def matches(doc, flt):
    for k, v in flt.items():
        if k == "$and":
            ok = all(matches(doc, f) for f in v)
        elif k == "$or":
            ok = any(matches(doc, f) for f in v)
        elif k == "$not":
            ok = not matches(doc, v)
        else:
            ok = field_matches(doc, k, v)
        if not ok:
            return False
    return True


def main():
    rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
    filters = json.load(open(sys.argv[2]))
    print(json.dumps([[i for i, r in enumerate(rows) if matches(r, f)] for f in filters]))


if __name__ == "__main__":
    main()
