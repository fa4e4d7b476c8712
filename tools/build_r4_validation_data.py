"""Build ``core/data/r4_validation.json.gz`` from the official FHIR R4 (4.0.1) definitions.

Usage: ``.venv/bin/python -m tools.build_r4_validation_data /path/to/hl7.fhir.r4.examples/package``

The npm package ``hl7.fhir.r4.examples`` 4.0.1 (CC0) carries every StructureDefinition, ValueSet and
CodeSystem of R4. From them this script writes one compact table that ``core/r4structure.py`` walks:

- ``types``: for every resource, data type and backbone element, its JSON members
  (``{key: [element, type, many, valueset]}``), the elements it requires, and the choice elements;
- ``valuesets``: the codes of every required binding on a ``code`` element whose value set can be
  enumerated from the package (value sets built from filters or external code systems are left out);
- ``r4b``: the differences between these R4 definitions and the ``fhir.resources.R4B`` models, found by
  comparing both trees element by element, and the resource types whose R4B model differs from R4.
"""

from __future__ import annotations

import gzip
import json
import sys
import typing
from collections import defaultdict
from pathlib import Path
from typing import Any

FHIR_TYPE_EXT = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
FHIRPATH = "http://hl7.org/fhirpath/"
PRIMITIVES = {
    "base64Binary",
    "boolean",
    "canonical",
    "code",
    "date",
    "dateTime",
    "decimal",
    "id",
    "instant",
    "integer",
    "markdown",
    "oid",
    "positiveInt",
    "string",
    "time",
    "unsignedInt",
    "uri",
    "url",
    "uuid",
    "xhtml",
}
OUT = Path(__file__).resolve().parent.parent / "core" / "data" / "r4_validation.json.gz"


def load(package: Path, prefix: str) -> list[dict[str, Any]]:
    """Return every JSON resource of the package whose file name starts with ``prefix``."""
    return [json.loads(p.read_text("utf-8")) for p in sorted(package.glob(f"{prefix}-*.json"))]


def type_code(element: dict[str, Any], t: dict[str, Any], is_resource: bool) -> str:
    """Return the FHIR type of one ``element.type`` entry (FHIRPath system types mapped back)."""
    code = str(t["code"])
    if not code.startswith("http://hl7.org/fhirpath/System."):
        return code
    if is_resource and element["path"].count(".") == 1 and element["path"].endswith(".id"):
        return "id"
    for ext in t.get("extension", []):
        if ext.get("url") == FHIR_TYPE_EXT:
            return str(ext["valueUrl"])
    return "string"


def build_types(sds: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, str], list[str]]:
    """Return the member tables of every type, the binding of each code element, and resource types."""
    base_sds = {
        sd["id"]: sd
        for sd in sds
        if sd["kind"] in {"resource", "complex-type"}
        and sd["id"] == sd["type"]
        and sd["url"] == f"http://hl7.org/fhir/StructureDefinition/{sd['id']}"
    }
    resources = sorted(
        name for name, sd in base_sds.items() if sd["kind"] == "resource" and not sd.get("abstract")
    )
    types: dict[str, Any] = {}
    bindings: dict[str, str] = {}
    for name, sd in base_sds.items():
        elements = sd["snapshot"]["element"]
        root = elements[0]["path"]
        for el in elements[1:]:
            path = el["path"]
            parent, _, member = path.rpartition(".")
            owner = name + parent[len(root) :]
            if el.get("max") == "0":
                continue
            table = types.setdefault(owner, {"e": {}, "r": [], "c": []})
            many = el.get("max") != "1"
            if "contentReference" in el:
                ref = el["contentReference"].lstrip("#")
                codes = [name + ref[len(root) :]]
            else:
                codes = []
                for t in el.get("type", []):
                    code = type_code(el, t, sd["kind"] == "resource")
                    if code in {"BackboneElement", "Element"} and path.count(".") >= 1:
                        code = name + path[len(root) :]
                    codes.append(code)
            if el.get("min", 0) >= 1:
                table["r"].append(member)
            binding = el.get("binding") or {}
            if member.endswith("[x]"):
                stem = member[:-3]
                table["c"].append(member)
                for code in codes:
                    key = stem + code[0].upper() + code[1:]
                    table["e"][key] = [member, code, int(many)]
            else:
                system = any(str(t["code"]).startswith(FHIRPATH) for t in el.get("type", ()))
                # FHIRPath system types (Element.id, Extension.url) carry no primitive extension (_key).
                table["e"][member] = [member, codes[0], int(many)] + ([1] if system else [])
                if binding.get("strength") == "required" and codes[0] == "code" and "valueSet" in binding:
                    bindings[f"{owner}.{member}"] = binding["valueSet"].split("|")[0]
            for code in codes:
                known = code in PRIMITIVES or code == "Resource" or code in base_sds or "." in code
                if not known:
                    raise SystemExit(f"{path}: type {code} has no definition")
    for table in types.values():
        table["r"] = sorted(set(table["r"]))
    return types, bindings, resources


def concepts(items: list[dict[str, Any]]) -> list[str]:
    """Return every code of a (nested) CodeSystem.concept list."""
    out: list[str] = []
    for c in items:
        out.append(c["code"])
        out.extend(concepts(c.get("concept", [])))
    return out


def expand(
    url: str, valuesets: dict[str, Any], codesystems: dict[str, Any], seen: set[str]
) -> set[str] | None:
    """Return the codes of a value set, or None if they cannot be enumerated from the package."""
    vs = valuesets.get(url)
    if vs is None or url in seen or "compose" not in vs or vs["compose"].get("exclude"):
        return None
    seen = seen | {url}
    codes: set[str] = set()
    for inc in vs["compose"].get("include", []):
        if inc.get("filter"):
            return None
        for nested in inc.get("valueSet", []):
            sub = expand(nested.split("|")[0], valuesets, codesystems, seen)
            if sub is None:
                return None
            codes |= sub
        system = inc.get("system")
        if system is None:
            continue
        if inc.get("concept"):
            codes |= {c["code"] for c in inc["concept"]}
            continue
        cs = codesystems.get(system)
        if cs is None or cs.get("content") != "complete" or not cs.get("concept"):
            return None
        codes |= set(concepts(cs["concept"]))
    return codes or None


def r4b_differences(types: dict[str, Any], resources: list[str]) -> tuple[list[str], list[str]]:
    """Compare the R4 tables with the fhir.resources R4B models; return differing types and details."""
    from fhir.resources.R4B import get_fhir_model_class

    def model_of(annotation: Any) -> str | None:
        args = typing.get_args(annotation)
        if args:
            for arg in args:
                found = model_of(arg)
                if found:
                    return found
            return None
        name = str(getattr(annotation, "__name__", ""))
        if name.endswith("Type") and name != "NoneType":
            return name[:-4]
        return None

    def is_list(annotation: Any) -> bool:
        return "List[" in str(annotation)

    details: list[str] = []
    differing: set[str] = set()

    def compare(r4_name: str, model: Any, resource: str, path: str, depth: int = 0) -> None:
        if depth > 6:
            return
        table = types[r4_name]
        fields = {f.alias or n: f for n, f in model.model_fields.items() if n != "fhir_comments"}
        fields = {k: f for k, f in fields.items() if not k.startswith("_")}
        for key, (member, code, many, *_) in table["e"].items():
            f = fields.get(key)
            where = f"{path}.{key}"
            if f is None:
                details.append(f"{where}: in R4, not in R4B")
                differing.add(resource)
                continue
            if bool(many) != is_list(f.annotation):
                details.append(f"{where}: cardinality 0..{'*' if many else '1'} in R4, not in R4B")
                differing.add(resource)
            required = bool((f.json_schema_extra or {}).get("element_required")) or f.is_required()
            r4_required = member in table["r"] and not member.endswith("[x]")
            if required and not r4_required:
                details.append(f"{where}: optional in R4, required in R4B")
                differing.add(resource)
            if code in PRIMITIVES or code == "Resource":
                continue
            sub = model_of(f.annotation)
            if "." in code:
                try:
                    sub_model = get_fhir_model_class(sub) if sub else None
                except Exception:
                    sub_model = None
                if sub_model is None:
                    details.append(f"{where}: R4B has no model for the backbone element")
                    differing.add(resource)
                else:
                    compare(code, sub_model, resource, where, depth + 1)
            elif sub is not None and sub != code and not (code == "Quantity" and sub == "Quantity"):
                details.append(f"{where}: type {code} in R4, {sub} in R4B")
                differing.add(resource)
        for key in fields:
            if key not in table["e"]:
                # Additive: R4 content stays valid for R4B; the R4 structural pass refuses the element.
                details.append(f"{path}.{key}: in R4B, not in R4 (additive)")

    missing: list[str] = []
    for resource in resources:
        try:
            model = get_fhir_model_class(resource)
        except Exception:
            missing.append(resource)
            continue
        compare(resource, model, resource, resource)
    for rname in missing:
        details.append(f"{rname}: no R4B model (removed or renamed in R4B)")
    return sorted(differing | set(missing)), details


def main(package: Path) -> None:
    """Write the validation table."""
    sds = load(package, "StructureDefinition")
    types, bindings, resources = build_types(sds)
    valuesets = {vs["url"]: vs for vs in load(package, "ValueSet")}
    codesystems = {cs["url"]: cs for cs in load(package, "CodeSystem")}
    vs_index: dict[str, int] = {}
    vs_codes: list[list[str]] = []
    vs_urls: list[str] = []
    per_type: dict[str, dict[str, int]] = defaultdict(dict)
    for where, url in sorted(bindings.items()):
        if url not in vs_index:
            codes = expand(url, valuesets, codesystems, set())
            if codes is None:
                vs_index[url] = -1
            else:
                vs_index[url] = len(vs_codes)
                vs_codes.append(sorted(codes))
                vs_urls.append(url)
        if vs_index[url] >= 0:
            owner, _, member = where.rpartition(".")
            per_type[owner][member] = vs_index[url]
    for owner, members in per_type.items():
        types[owner]["b"] = members
    differing, details = r4b_differences(types, resources)
    data = {
        "fhirVersion": "4.0.1",
        "resources": resources,
        "types": dict(sorted(types.items())),
        "valuesets": {"urls": vs_urls, "codes": vs_codes},
        "r4b": {"differing": differing, "details": details},
    }
    text = json.dumps(data, separators=(",", ":")) + "\n"
    OUT.write_bytes(gzip.compress(text.encode("utf-8"), compresslevel=9, mtime=0))
    print(f"{len(types)} types, {len(resources)} resources, {len(vs_codes)} value sets, {OUT}")
    print(f"R4B differs for {len(differing)} resource types: {', '.join(differing)}")
    for line in details:
        print("  ", line)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/r4/package"))
