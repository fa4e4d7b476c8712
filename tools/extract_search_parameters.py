"""Build the search-parameter and element-type tables shipped in ``storage/search/data``.

Run it against an unpacked ``hl7.fhir.r4.examples`` 4.0.1 package (CC0)::

    python -m tools.extract_search_parameters /path/to/package

It reads every official ``SearchParameter-*.json`` (version 4.0.1, with a base and a code) and the core
``StructureDefinition-*.json`` of resources and data types, and writes two compact JSON files:

- ``search_parameters.json``: one entry per SearchParameter with code, url, type, base types, FHIRPath
  expression, target types, modifiers, comparators, multipleOr/multipleAnd and chains;
- ``element_types.json``: for each type context (a resource, a data type, or a backbone element path) the
  child element names and their types, which the FHIRPath compiler uses to turn a path into JSON keys.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

FHIR_VERSION = "4.0.1"
CORE_SD = "http://hl7.org/fhir/StructureDefinition/"
CORE_SP = "http://hl7.org/fhir/SearchParameter/"
DATA_DIR = Path(__file__).parent / "data"
_NESTED = frozenset({"BackboneElement", "Element"})
_SYSTEM_TYPES = {
    "http://hl7.org/fhirpath/System.String": "string",
    "http://hl7.org/fhirpath/System.Boolean": "boolean",
    "http://hl7.org/fhirpath/System.Integer": "integer",
    "http://hl7.org/fhirpath/System.Decimal": "decimal",
    "http://hl7.org/fhirpath/System.Date": "date",
    "http://hl7.org/fhirpath/System.DateTime": "dateTime",
    "http://hl7.org/fhirpath/System.Time": "time",
}


def search_parameter_entry(data: dict[str, Any]) -> dict[str, Any] | None:
    """Return the compact table entry of one SearchParameter, or None if it is not an official R4 one."""
    if data.get("resourceType") != "SearchParameter":
        return None
    url = str(data.get("url", ""))
    if not url.startswith(CORE_SP) or data.get("version") != FHIR_VERSION:
        return None
    if not data.get("base") or not data.get("code"):
        return None
    entry: dict[str, Any] = {
        "code": data["code"],
        "url": url,
        "type": data["type"],
        "base": list(data["base"]),
        "expression": data.get("expression"),
    }
    for key in ("target", "modifier", "comparator", "chain"):
        if data.get(key):
            entry[key] = list(data[key])
    if "multipleOr" in data:
        entry["multipleOr"] = bool(data["multipleOr"])
    if "multipleAnd" in data:
        entry["multipleAnd"] = bool(data["multipleAnd"])
    if data.get("component"):
        entry["component"] = [c.get("definition") for c in data["component"]]
    return entry


def _type_code(item: dict[str, Any]) -> str:
    code = str(item.get("code", ""))
    for ext in item.get("extension", []):
        if ext.get("url", "").endswith("structuredefinition-fhir-type") and "valueUrl" in ext:
            return str(ext["valueUrl"])
    return _SYSTEM_TYPES.get(code, code)


def element_types_of(sd: dict[str, Any]) -> dict[str, dict[str, list[str]]]:
    """Return ``{context path: {child name: [types]}}`` from a StructureDefinition's snapshot.

    A choice element keeps its ``[x]`` suffix; a nested backbone element's type is ``@`` + its own path
    (the context its children live under); a content reference is ``@`` + the referenced path.
    """
    out: dict[str, dict[str, list[str]]] = {}
    for element in sd.get("snapshot", {}).get("element", []):
        path = str(element["path"])
        if "." not in path:
            continue
        parent, name = path.rsplit(".", 1)
        if "contentReference" in element:
            types = ["@" + str(element["contentReference"]).lstrip("#")]
        else:
            codes = [_type_code(t) for t in element.get("type", [])]
            types = ["@" + path.removesuffix("[x]") if code in _NESTED else code for code in codes]
        out.setdefault(parent, {})[name] = types
    return out


def _core_definitions(package: Path) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Return the core resource and data type StructureDefinitions, and constrained type -> base type."""
    keep: list[dict[str, Any]] = []
    aliases: dict[str, str] = {}
    for path in sorted(package.glob("StructureDefinition-*.json")):
        sd = json.loads(path.read_text("utf-8"))
        if not str(sd.get("url", "")).startswith(CORE_SD) or sd.get("kind") not in {
            "resource",
            "complex-type",
        }:
            continue
        if sd["url"] != CORE_SD + sd.get("id", ""):
            continue
        if sd.get("derivation") == "constraint":
            # Constrained data types (SimpleQuantity, MoneyQuantity) are read as their base type.
            is_datatype = sd["kind"] == "complex-type" and sd["type"] not in {"Extension", sd["id"]}
            if is_datatype and sd["id"][:1].isupper():
                aliases[sd["id"]] = sd["type"]
            continue
        keep.append(sd)
    return keep, aliases


def build_tables(package: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return the search-parameter table and the element-type table built from ``package``."""
    params = []
    for path in sorted(package.glob("SearchParameter-*.json")):
        entry = search_parameter_entry(json.loads(path.read_text("utf-8")))
        if entry is not None:
            params.append(entry)
    params.sort(key=lambda e: (e["base"][0], e["code"], e["url"]))
    elements: dict[str, dict[str, list[str]]] = {}
    definitions, aliases = _core_definitions(package)
    for sd in definitions:
        for context, children in element_types_of(sd).items():
            elements.setdefault(context, {}).update(children)
    search_table = {"fhirVersion": FHIR_VERSION, "source": "hl7.fhir.r4.examples", "parameters": params}
    element_table = {"fhirVersion": FHIR_VERSION, "aliases": aliases, "contexts": elements}
    return search_table, element_table


def _write(path: Path, table: dict[str, Any], list_key: str) -> None:
    """Write ``table`` compactly, one list item (or one context) per line so that diffs stay readable."""
    lines = ["{"]
    head = {k: v for k, v in table.items() if k != list_key}
    for key, value in head.items():
        lines.append(f"{json.dumps(key)}: {json.dumps(value, separators=(',', ':'), sort_keys=True)},")
    items = table[list_key]
    lines.append(f"{json.dumps(list_key)}: " + ("[" if isinstance(items, list) else "{"))
    rendered = (
        [json.dumps(item, separators=(",", ":")) for item in items]
        if isinstance(items, list)
        else [
            f"{json.dumps(k)}:{json.dumps(items[k], separators=(',', ':'), sort_keys=True)}"
            for k in sorted(items)
        ]
    )
    lines.append(",\n".join(rendered))
    lines.append(("]" if isinstance(items, list) else "}") + "\n}")
    path.write_text("\n".join(lines) + "\n", "utf-8")


def main(argv: list[str] | None = None) -> int:
    """Extract the tables from a package directory into ``storage/search/data``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("package", type=Path, help="the unpacked package directory (holding the JSON files)")
    parser.add_argument("--out", type=Path, default=DATA_DIR, help="output directory")
    args = parser.parse_args(argv)
    package: Path = args.package
    if not package.is_dir():
        print(f"{package} is not a directory", file=sys.stderr)
        return 2
    search_table, element_table = build_tables(package)
    if not search_table["parameters"] or not element_table["contexts"]:
        print(f"{package} holds no R4 SearchParameter or StructureDefinition files", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    _write(args.out / "search_parameters.json", search_table, "parameters")
    _write(args.out / "element_types.json", element_table, "contexts")
    print(
        f"{len(search_table['parameters'])} search parameters, "
        f"{len(element_table['contexts'])} element contexts written to {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
