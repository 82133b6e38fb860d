"""Regenerate the vocabularies in tests/schemas/vocabularies/ from checkouts of the ECS and OCSF repositories.

The alert tests check every field the ECS and OCSF builders emit against the standards' own definitions, with
no network: these files are extracts of those definitions (field names, types, allowed values), made by this
script and committed. Run it only to move to another version of either standard::

    python -m tests.schemas.extract_vocabularies --ecs PATH/TO/elastic/ecs --ocsf PATH/TO/ocsf/ocsf-schema

``--ecs`` reads ``generated/ecs/ecs_flat.yml`` at tag ``v{ECS_VERSION}``; ``--ocsf`` resolves the Detection
Finding class and the objects it uses at tag ``{OCSF_VERSION}`` (the schema's own rules: ``extends``,
``$include`` of includes and profiles, types from ``dictionary.json``). Both projects are Apache-2.0.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from detector.core.alertformats import ECS_VERSION, OCSF_VERSION

HERE = Path(__file__).resolve().parent / "vocabularies"
# The ECS field sets an alert may use (the builder's); the rest of ECS is left out of the extract.
ECS_FIELD_SETS = {"@timestamp", "ecs", "message", "tags", "labels", "event", "source", "destination", "network", "rule"}
ECS_FIELD_SETS |= {"threat", "observer"}
# The OCSF objects an alert may hold (the builder's), resolved with their attributes.
OCSF_OBJECTS = (
    "metadata", "product", "finding_info", "analytic", "attack", "tactic", "technique", "sub_technique",
    "evidences", "network_endpoint", "network_connection_info", "observable",
)  # fmt: skip


def git_show(repo: Path, ref: str, path: str) -> str:
    return subprocess.run(
        ["git", "--git-dir", str(repo), "show", f"{ref}:{path}"], check=True, capture_output=True, text=True
    ).stdout


def ecs_vocabulary(repo: Path) -> dict[str, Any]:
    flat = yaml.safe_load(git_show(repo, f"v{ECS_VERSION}", "generated/ecs/ecs_flat.yml"))
    fields = {}
    for name, spec in flat.items():
        if name.split(".", 1)[0] not in ECS_FIELD_SETS:
            continue
        entry: dict[str, Any] = {"type": spec["type"], "array": "array" in (spec.get("normalize") or [])}
        allowed = spec.get("allowed_values")
        if allowed:
            entry["allowed"] = {value["name"]: value.get("expected_event_types", []) for value in allowed}
        fields[name] = entry
    return {"version": ECS_VERSION, "source": "elastic/ecs generated/ecs/ecs_flat.yml", "fields": fields}


class _Ocsf:
    def __init__(self, repo: Path) -> None:
        self.repo, self.ref = repo, OCSF_VERSION
        self.dictionary = json.loads(git_show(repo, self.ref, "dictionary.json"))["attributes"]

    def read(self, path: str) -> dict[str, Any]:
        return json.loads(git_show(self.repo, self.ref, path))

    def attributes(self, path: str) -> dict[str, Any]:
        """The attributes of an event or object file, its parents' and includes' merged (the file's win)."""
        document = self.read(path)
        merged: dict[str, Any] = {}
        parent = document.get("extends")
        if parent and parent != "object":
            folder = "objects" if path.startswith("objects/") else _event_folder(self, parent)
            merged.update(self.attributes(f"{folder}/{parent}.json"))
        own = dict(document.get("attributes", {}))
        for include in own.pop("$include", []):
            included = self.read(include)
            profile = included.get("name") if included.get("meta") == "profile" else None
            for name, spec in included.get("attributes", {}).items():
                merged[name] = {**merged.get(name, {}), **spec, **({"profile": profile} if profile else {})}
        for name, spec in own.items():
            merged[name] = {**merged.get(name, {}), **spec}
        # flowwarden applies no OCSF profile: an attribute that only a profile brings is not there
        return {name: spec for name, spec in merged.items() if not spec.get("profile")}

    def resolved(self, path: str) -> dict[str, Any]:
        result = {}
        for name, spec in self.attributes(path).items():
            base = self.dictionary.get(name, {})
            enum = spec.get("enum") or base.get("enum")
            entry: dict[str, Any] = {
                "type": base.get("type", "object"),
                "array": bool(base.get("is_array")),
                "requirement": spec.get("requirement", "optional"),
            }
            if enum:
                entry["enum"] = sorted(int(key) for key in enum)
            if "@deprecated" in base or "@deprecated" in spec:
                entry["deprecated"] = True
            result[name] = entry
        return result


def _event_folder(ocsf: _Ocsf, name: str) -> str:
    return "events" if name == "base_event" else "events/findings"


def ocsf_vocabulary(repo: Path) -> dict[str, Any]:
    ocsf = _Ocsf(repo)
    finding = ocsf.read("events/findings/detection_finding.json")
    category_name = finding.get("category") or ocsf.read("events/findings/finding.json")["category"]
    category = ocsf.read("categories.json")["attributes"][category_name]["uid"]
    objects = {name: ocsf.resolved(f"objects/{name}.json") for name in OCSF_OBJECTS}
    # The compiler adds each observable data type (ip_t: 2, ...) to the observable's type_id enum.
    types = json.loads(git_show(repo, OCSF_VERSION, "dictionary.json"))["types"]["attributes"]
    observed = {spec["observable"] for spec in types.values() if "observable" in spec}
    objects["observable"]["type_id"]["enum"] = sorted(set(objects["observable"]["type_id"]["enum"]) | observed)
    attributes = ocsf.resolved("events/findings/detection_finding.json")
    uid = category * 1000 + finding["uid"]
    attributes["category_uid"]["enum"] = [category]
    attributes["class_uid"]["enum"] = [uid]
    attributes["type_uid"]["enum"] = [uid * 100 + activity for activity in attributes["activity_id"]["enum"]]
    constraints = {name: ocsf.read(f"objects/{name}.json").get("constraints", {}) for name in OCSF_OBJECTS}
    return {
        "version": OCSF_VERSION,
        "source": "ocsf/ocsf-schema",
        "class": {
            "name": finding["name"],
            "uid": uid,
            "category_uid": category,
            "attributes": attributes,
        },
        "objects": objects,
        "constraints": {name: value for name, value in constraints.items() if value},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ecs", type=Path, help="git directory of elastic/ecs")
    parser.add_argument("--ocsf", type=Path, help="git directory of ocsf/ocsf-schema")
    args = parser.parse_args()
    HERE.mkdir(exist_ok=True)
    if args.ecs:
        out = HERE / f"ecs-{ECS_VERSION}.json"
        out.write_text(json.dumps(ecs_vocabulary(args.ecs), indent=1, sort_keys=True) + "\n", encoding="utf-8")
    if args.ocsf:
        out = HERE / f"ocsf-{OCSF_VERSION}.json"
        out.write_text(json.dumps(ocsf_vocabulary(args.ocsf), indent=1, sort_keys=True) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
