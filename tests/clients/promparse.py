"""Parses a Prometheus text exposition (stdin) with prometheus_client's own
parser, the judge of tests/metrics.rs, and prints what it understood as JSON:
{"families": {name: type}, "samples": [[name, {labels}, value], ...]}.
A text the parser rejects exits 1 with its complaint on stderr."""

import json
import sys

from prometheus_client.parser import text_string_to_metric_families


def main():
    text = sys.stdin.read()
    families = {}
    samples = []
    try:
        for family in text_string_to_metric_families(text):
            families[family.name] = family.type
            for s in family.samples:
                samples.append([s.name, dict(s.labels), s.value])
    except Exception as e:  # the parser raises ValueError and friends
        print(f"not valid exposition text: {e}", file=sys.stderr)
        sys.exit(1)
    json.dump({"families": families, "samples": samples}, sys.stdout)


main()
