#!/usr/bin/env python3
"""Convert WDC-PAVE (titles with descriptions) to the engine's gold JSONL.

WDC-PAVE (Brinkmann et al. 2024, github.com/wbsg-uni-mannheim/wdc-pave) holds product offers of
59 shops in 5 categories, each a title and a description with 10-20 attributes annotated.
    python scripts/make_pave.py WDC_PAVE/data/processed_datasets/wdc_with_all_attributes/test.jsonl out/pave/test.jsonl
The text is the title, a new line, then the description; an attribute's accepted values are
every value annotated for it ("n/a": null).  The offers of a category list the same attributes
in varying orders; each is written in one order per category (first seen), so that documents
asking the same of the same category share their head, as a schema's would.  The descriptions are cut at ~1,000 characters;
`--join 2500` writes texts of 2,500+ characters instead, consecutive offers of a category
joined (for speed only: no gold values).
"""
import argparse
import json
from pathlib import Path


def convert(offer: dict, order: dict[str, int]) -> dict:
    text = "\n".join(part.strip() for part in (offer["input_title"], offer.get("input_description") or "")
                     if part and part.strip())
    accepted = {name: [value for value in values if value != "n/a"]
                for name, values in sorted(offer["target_scores"].items(), key=lambda item: order[item[0]])}
    return {"id": f"pave-{offer['id']}", "text": text, "category": offer["category"],
            "attributes": list(accepted), "gold": {name: (v[0] if v else None) for name, v in accepted.items()},
            "gold_all": accepted}


def joined(records: list[dict], chars: int) -> list[dict]:
    """Consecutive records of a category joined until their texts reach `chars`; the first's
    attributes."""
    by_category: dict[str, list[dict]] = {}
    for record in records:
        by_category.setdefault(record["category"], []).append(record)
    out = []
    for category, group in by_category.items():
        start = 0
        for end in range(len(group)):
            if sum(len(r["text"]) for r in group[start: end + 1]) >= chars:
                first = group[start]
                out.append({"id": f"joined-{first['id']}", "category": category, "attributes": first["attributes"],
                            "text": "\n\n".join(r["text"] for r in group[start: end + 1])})
                start = end + 1
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("target")
    parser.add_argument("--join", type=int, metavar="CHARS", help="texts of at least CHARS characters, no gold")
    args = parser.parse_args()
    lines = Path(args.source).read_text(encoding="utf-8").splitlines()
    offers = [json.loads(line) for line in lines if line.strip()]
    orders: dict[str, dict[str, int]] = {}
    for offer in offers:
        order = orders.setdefault(offer["category"], {})
        for name in offer["target_scores"]:
            order.setdefault(name, len(order))
    records = [convert(offer, orders[offer["category"]]) for offer in offers]
    if args.join:
        records = joined(records, args.join)
    Path(args.target).parent.mkdir(parents=True, exist_ok=True)
    with open(args.target, "w", encoding="utf-8") as out:
        out.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    print(f"{args.target}: {len(records)} products")


if __name__ == "__main__":
    main()
