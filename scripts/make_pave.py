#!/usr/bin/env python3
"""Convert WDC-PAVE (titles with descriptions) to the engine's gold JSONL.

WDC-PAVE (Brinkmann et al. 2024, github.com/wbsg-uni-mannheim/wdc-pave) holds product offers of
59 shops in 5 categories, each a title and a description with 10-20 attributes annotated.
    python scripts/make_pave.py WDC_PAVE/data/processed_datasets/wdc_with_all_attributes/test.jsonl out/pave/test.jsonl
The text is the title, a new line, then the description; an attribute's accepted values are
every value annotated for it ("n/a": null).  The offers of a category list the same attributes
in varying orders; each is written in one order per category (the first seen), as a schema
would give them.  The descriptions are cut at ~1,000 characters; `--join 2500` writes texts of
2,500+ characters instead, consecutive offers of a category joined (for speed only: no gold
values); `--pad 2500` keeps each offer and its gold and adds a shop's boilerplate (shipping,
returns, payment: no attribute values) until the text is that long, as a product page's footer
would.
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


# Written for this script: what a shop's product page says besides the product.
BOILERPLATE = """
Shipping: Orders placed before the daily cut-off are dispatched on the same working day. Delivery
normally takes between two and five working days, depending on the destination and the carrier
chosen at checkout. You will receive an email with a tracking link as soon as your parcel leaves
our warehouse. Deliveries to remote areas and islands may take longer. We cannot deliver to
post office boxes.

Returns: If you are not completely satisfied with your purchase, you may return it within the
statutory withdrawal period. Items must be returned unused, in their original packaging and with
all accessories and documentation. Please contact our customer service before sending anything
back so that we can give you a return authorisation. Refunds are issued to the original method of
payment once the returned item has been received and inspected.

Payment: We accept all major credit cards, bank transfer and the usual online payment services.
Your payment information is encrypted and never stored on our servers. Invoices are sent by email
and can also be downloaded from your customer account.

Customer service: Our team is happy to help with any question about your order, about delivery or
about the products in our shop. Write to us through the contact form and we will answer within one
working day. Please have your order number at hand.

Notes: Pictures may differ slightly from the product supplied. Prices include the statutory value
added tax and exclude delivery costs unless stated otherwise. All trademarks mentioned belong to
their respective owners."""


def padded(record: dict, chars: int) -> dict:
    """The offer with boilerplate paragraphs appended until its text has at least `chars`
    characters; the gold stays the offer's."""
    text, paragraphs = record["text"], [" ".join(p.split()) for p in BOILERPLATE.strip().split("\n\n")]
    index = 0
    while len(text) < chars:
        text += "\n\n" + paragraphs[index % len(paragraphs)]
        index += 1
    return {**record, "id": f"padded-{record['id']}", "text": text}


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
    parser.add_argument("--pad", type=int, metavar="CHARS", help="each offer padded with boilerplate to CHARS characters")
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
    if args.pad:
        records = [padded(r, args.pad) for r in records]
    Path(args.target).parent.mkdir(parents=True, exist_ok=True)
    with open(args.target, "w", encoding="utf-8") as out:
        out.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    print(f"{args.target}: {len(records)} products")


if __name__ == "__main__":
    main()
