"""One feature vocabulary for every flow-meter dialect.

Flow CSVs and flow records arrive in several column dialects: the original CICIDS2017
"MachineLearningCVE" names (leading spaces, ``Fwd Header Length`` twice), the fixed CICFlowMeter of the
improved CICIDS2017 (CNS2022), CSE-CIC-IDS2018 abbreviations (``Tot Fwd Pkts``), the Python
``cicflowmeter`` package's snake_case names, and UNSW-NB15 (partition and original 49-feature files).
:func:`resolve_columns` maps any of them onto canonical names, so training and serving agree on what a
feature is.

Canonical names:

* CIC family: the fixed-CICFlowMeter (improved CICIDS2017) spelling, e.g. ``Total Fwd Packet``. Times
  are in microseconds, as in every CIC CSV.
* UNSW-NB15 family: the partition-file spelling, e.g. ``sinpkt``, ``smean``.

Names are matched on a *key*: lower case with everything but letters and digits removed, so
``" Flow IAT Min"``, ``"Flow IAT Min"`` and ``"flow_iat_min"`` are one name. The Python ``cicflowmeter``
package writes times in **seconds**; a column spelled exactly as that package spells a time column is
converted to microseconds (see :data:`PYTHON_CICFLOWMETER_SECONDS`). Its packet lengths include
headers, which no rule can undo: a model trained on CIC CSVs is less accurate on its output.

Columns that identify a flow (flow id, addresses, source port, timestamps) are *metadata*: they are
carried into alerts but never used as features, because they leak the label in every public dataset.
The destination port is both a feature and metadata.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum

MICROSECONDS_PER_SECOND = 1_000_000.0

# canonical name -> other spellings seen in the wild (the canonical spelling matches itself).
_CIC: dict[str, tuple[str, ...]] = {
    "Dst Port": ("Destination Port", "dst_port"),
    "Protocol": (),
    "Flow Duration": (),
    "Total Fwd Packet": ("Total Fwd Packets", "Tot Fwd Pkts"),
    "Total Bwd packets": ("Total Backward Packets", "Tot Bwd Pkts", "Total Bwd Packets"),
    "Total Length of Fwd Packet": ("Total Length of Fwd Packets", "TotLen Fwd Pkts"),
    "Total Length of Bwd Packet": ("Total Length of Bwd Packets", "TotLen Bwd Pkts"),
    "Fwd Packet Length Max": ("Fwd Pkt Len Max",),
    "Fwd Packet Length Min": ("Fwd Pkt Len Min",),
    "Fwd Packet Length Mean": ("Fwd Pkt Len Mean",),
    "Fwd Packet Length Std": ("Fwd Pkt Len Std",),
    "Bwd Packet Length Max": ("Bwd Pkt Len Max",),
    "Bwd Packet Length Min": ("Bwd Pkt Len Min",),
    "Bwd Packet Length Mean": ("Bwd Pkt Len Mean",),
    "Bwd Packet Length Std": ("Bwd Pkt Len Std",),
    "Flow Bytes/s": ("Flow Byts/s",),
    "Flow Packets/s": ("Flow Pkts/s",),
    "Flow IAT Mean": (),
    "Flow IAT Std": (),
    "Flow IAT Max": (),
    "Flow IAT Min": (),
    "Fwd IAT Total": ("Fwd IAT Tot",),
    "Fwd IAT Mean": (),
    "Fwd IAT Std": (),
    "Fwd IAT Max": (),
    "Fwd IAT Min": (),
    "Bwd IAT Total": ("Bwd IAT Tot",),
    "Bwd IAT Mean": (),
    "Bwd IAT Std": (),
    "Bwd IAT Max": (),
    "Bwd IAT Min": (),
    "Fwd PSH Flags": (),
    "Bwd PSH Flags": (),
    "Fwd URG Flags": (),
    "Bwd URG Flags": (),
    "Fwd RST Flags": (),
    "Bwd RST Flags": (),
    "Fwd Header Length": ("Fwd Header Len",),
    "Bwd Header Length": ("Bwd Header Len",),
    "Fwd Packets/s": ("Fwd Pkts/s",),
    "Bwd Packets/s": ("Bwd Pkts/s",),
    "Packet Length Min": ("Min Packet Length", "Pkt Len Min"),
    "Packet Length Max": ("Max Packet Length", "Pkt Len Max"),
    "Packet Length Mean": ("Pkt Len Mean",),
    "Packet Length Std": ("Pkt Len Std",),
    "Packet Length Variance": ("Pkt Len Var",),
    "FIN Flag Count": ("FIN Flag Cnt",),
    "SYN Flag Count": ("SYN Flag Cnt",),
    "RST Flag Count": ("RST Flag Cnt",),
    "PSH Flag Count": ("PSH Flag Cnt",),
    "ACK Flag Count": ("ACK Flag Cnt",),
    "URG Flag Count": ("URG Flag Cnt",),
    # The original CICIDS2017 and CSE-CIC-IDS2018 CSVs spell CWR as "CWE" (a typo in CICFlowMeter).
    "CWR Flag Count": ("CWE Flag Count", "CWE Flag Cnt", "CWR Flag Cnt"),
    "ECE Flag Count": ("ECE Flag Cnt",),
    "Down/Up Ratio": (),
    "Average Packet Size": ("Pkt Size Avg",),
    "Fwd Segment Size Avg": ("Avg Fwd Segment Size", "Fwd Seg Size Avg"),
    "Bwd Segment Size Avg": ("Avg Bwd Segment Size", "Bwd Seg Size Avg"),
    "Fwd Bytes/Bulk Avg": ("Fwd Avg Bytes/Bulk", "Fwd Byts/b Avg"),
    "Fwd Packet/Bulk Avg": ("Fwd Avg Packets/Bulk", "Fwd Pkts/b Avg"),
    "Fwd Bulk Rate Avg": ("Fwd Avg Bulk Rate", "Fwd Blk Rate Avg"),
    "Bwd Bytes/Bulk Avg": ("Bwd Avg Bytes/Bulk", "Bwd Byts/b Avg"),
    "Bwd Packet/Bulk Avg": ("Bwd Avg Packets/Bulk", "Bwd Pkts/b Avg"),
    "Bwd Bulk Rate Avg": ("Bwd Avg Bulk Rate", "Bwd Blk Rate Avg"),
    "Subflow Fwd Packets": ("Subflow Fwd Pkts",),
    "Subflow Fwd Bytes": ("Subflow Fwd Byts",),
    "Subflow Bwd Packets": ("Subflow Bwd Pkts",),
    "Subflow Bwd Bytes": ("Subflow Bwd Byts",),
    "FWD Init Win Bytes": ("Init_Win_bytes_forward", "Init Fwd Win Byts", "Init Fwd Win Bytes"),
    "Bwd Init Win Bytes": ("Init_Win_bytes_backward", "Init Bwd Win Byts"),
    "Fwd Act Data Pkts": ("act_data_pkt_fwd", "Fwd Act Data Packets"),
    "Fwd Seg Size Min": ("min_seg_size_forward",),
    "Active Mean": (),
    "Active Std": (),
    "Active Max": (),
    "Active Min": (),
    "Idle Mean": (),
    "Idle Std": (),
    "Idle Max": (),
    "Idle Min": (),
    "ICMP Code": (),
    "ICMP Type": (),
    "Total TCP Flow Time": (),
}

#: Time columns as the Python ``cicflowmeter`` package spells them; their values are seconds.
PYTHON_CICFLOWMETER_SECONDS: frozenset[str] = frozenset(
    ["flow_duration"]
    + [f"{d}_iat_{s}" for d in ("flow", "fwd", "bwd") for s in ("mean", "std", "max", "min", "tot")]
    + [f"{p}_{s}" for p in ("active", "idle") for s in ("mean", "std", "max", "min")]
)

_UNSW: dict[str, tuple[str, ...]] = {
    "dsport": (),
    "dur": (),
    "proto": (),
    "service": (),
    "state": (),
    "spkts": (),
    "dpkts": (),
    "sbytes": (),
    "dbytes": (),
    "rate": (),
    "sttl": (),
    "dttl": (),
    "sload": (),
    "dload": (),
    "sloss": (),
    "dloss": (),
    "sinpkt": ("Sintpkt",),
    "dinpkt": ("Dintpkt",),
    "sjit": (),
    "djit": (),
    "swin": (),
    "stcpb": (),
    "dtcpb": (),
    "dwin": (),
    "tcprtt": (),
    "synack": (),
    "ackdat": (),
    "smean": ("smeansz",),
    "dmean": ("dmeansz",),
    "trans_depth": (),
    "response_body_len": ("res_bdy_len",),
    "ct_srv_src": (),
    "ct_state_ttl": (),
    "ct_dst_ltm": (),
    "ct_src_dport_ltm": (),
    "ct_dst_sport_ltm": (),
    "ct_dst_src_ltm": (),
    "is_ftp_login": (),
    "ct_ftp_cmd": (),
    "ct_flw_http_mthd": (),
    "ct_src_ltm": (),
    "ct_srv_dst": (),
    "is_sm_ips_ports": (),
}

#: Features whose values are category names rather than numbers (one-hot encoded).
CATEGORICAL_FEATURES: frozenset[str] = frozenset({"proto", "service", "state"})

# Flow identity carried into alerts: field -> spellings.
_FLOW_FIELDS: dict[str, tuple[str, ...]] = {
    "flow_id": ("Flow ID",),
    "src_ip": ("Src IP", "Source IP", "srcip"),
    "src_port": ("Src Port", "Source Port", "sport"),
    "dst_ip": ("Dst IP", "Destination IP", "dstip"),
    "dst_port": ("Dst Port", "Destination Port", "dsport"),
    "protocol": ("Protocol", "proto"),
    "timestamp": ("Timestamp", "Stime"),
}

#: Label columns in order of preference: UNSW-NB15's class column ``attack_cat`` beats its 0/1 ``label``
#: (which matches ``Label`` too: names are compared by key).
LABEL_COLUMNS: tuple[str, ...] = ("attack_cat", "Label")

# Columns that are neither features nor flow identity nor labels: row ids, end times, a dataset's
# bookkeeping, and the original CICIDS2017's duplicate of Fwd Header Length.
_IGNORED: tuple[str, ...] = ("id", "Ltime", "Attempted Category", "Fwd Header Length.1")


def column_key(name: str) -> str:
    """The matching key of a column name: lower case, letters and digits only."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _keyed(table: dict[str, tuple[str, ...]]) -> dict[str, str]:
    keyed: dict[str, str] = {}
    for canonical, aliases in table.items():
        for spelling in (canonical, *aliases):
            keyed[column_key(spelling)] = canonical
    return keyed


_FEATURE_BY_KEY: dict[str, str] = {**_keyed(_CIC), **_keyed(_UNSW)}
_FLOW_FIELD_BY_KEY: dict[str, str] = _keyed(_FLOW_FIELDS)
_LABEL_KEYS: dict[str, str] = {column_key(name): name for name in LABEL_COLUMNS}
_IGNORED_KEYS: frozenset[str] = frozenset(column_key(name) for name in _IGNORED)

CIC_FEATURES: tuple[str, ...] = tuple(_CIC)
UNSW_FEATURES: tuple[str, ...] = tuple(_UNSW)

#: CIC features that only newer meters write: the fixed CICFlowMeter of the improved CICIDS2017 adds RST
#: flags, ICMP fields and the TCP flow time; the original CICIDS2017 CSVs also lack ``Protocol``.
_NEWER_METER_ONLY = frozenset(
    {"Protocol", "Fwd RST Flags", "Bwd RST Flags", "ICMP Code", "ICMP Type", "Total TCP Flow Time"}
)

#: CIC features every CIC dialect provides (original and improved CICIDS2017, CSE-CIC-IDS2018, the Python
#: ``cicflowmeter``). A bundle trained on these can score flows from any of those meters.
PORTABLE_CIC_FEATURES: tuple[str, ...] = tuple(name for name in _CIC if name not in _NEWER_METER_ONLY)


class Role(Enum):
    FEATURE = "feature"
    FLOW = "flow"  # identity only (addresses, ports, ids, timestamps)
    LABEL = "label"
    IGNORED = "ignored"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Column:
    """What one input column is: its role, canonical name, and the factor that converts its unit."""

    source: str
    role: Role
    canonical: str | None = None
    flow_field: str | None = None
    scale: float = 1.0


@dataclass(frozen=True)
class ColumnPlan:
    """How a table's or record's columns map onto the canonical vocabulary.

    ``features`` maps canonical feature name -> source column, ``flow_fields`` maps alert flow field ->
    source column, ``label`` is the chosen label column (or None), ``duplicates`` lists source columns
    dropped because an earlier column already gave the same canonical feature.
    """

    columns: tuple[Column, ...]
    features: dict[str, Column] = field(default_factory=dict)
    flow_fields: dict[str, str] = field(default_factory=dict)
    label: str | None = None
    secondary_labels: tuple[str, ...] = ()
    duplicates: tuple[str, ...] = ()
    unknown: tuple[str, ...] = ()


def resolve_columns(names: Sequence[str]) -> ColumnPlan:
    """Map source column names (any dialect) onto canonical features, flow fields and the label.

    The first column that gives a canonical feature wins; later ones are recorded as duplicates.
    Unknown columns are reported, not guessed at.
    """
    columns: list[Column] = []
    features: dict[str, Column] = {}
    flow_fields: dict[str, str] = {}
    duplicates: list[str] = []
    unknown: list[str] = []
    label_columns: list[str] = []

    for name in names:
        key = column_key(name)
        flow_field = _FLOW_FIELD_BY_KEY.get(key)
        if flow_field is not None and flow_field not in flow_fields:
            flow_fields[flow_field] = name
        if key in _LABEL_KEYS and any(column_key(seen) == key for seen in label_columns):
            duplicates.append(name)  # a second label column: the first one is the label, as with features
            column = Column(name, Role.IGNORED)
        elif key in _LABEL_KEYS:
            label_columns.append(name)
            column = Column(name, Role.LABEL)
        elif key in _FEATURE_BY_KEY:
            canonical = _FEATURE_BY_KEY[key]
            scale = MICROSECONDS_PER_SECOND if name.strip() in PYTHON_CICFLOWMETER_SECONDS else 1.0
            column = Column(name, Role.FEATURE, canonical, flow_field, scale)
            if canonical in features:
                duplicates.append(name)
                column = Column(name, Role.IGNORED, canonical)
            else:
                features[canonical] = column
        elif flow_field is not None:
            column = Column(name, Role.FLOW, flow_field=flow_field)
        elif key in _IGNORED_KEYS:
            column = Column(name, Role.IGNORED)
        else:
            unknown.append(name)
            column = Column(name, Role.UNKNOWN)
        columns.append(column)

    label, secondary = _choose_label(label_columns, cic=family_of(features) == "cic")
    return ColumnPlan(
        columns=tuple(columns),
        features=features,
        flow_fields=flow_fields,
        label=label,
        secondary_labels=secondary,
        duplicates=tuple(duplicates),
        unknown=tuple(unknown),
    )


def _choose_label(candidates: Iterable[str], *, cic: bool = False) -> tuple[str | None, tuple[str, ...]]:
    """UNSW-NB15's class is ``attack_cat`` (its ``label`` is a 0/1 flag); a CIC file's class is its ``Label``,
    even when a re-packaged file also carries an ``attack_cat`` column."""
    by_key = {column_key(name): name for name in candidates}
    preference = reversed(LABEL_COLUMNS) if cic else LABEL_COLUMNS
    ordered = [by_key[column_key(name)] for name in preference if column_key(name) in by_key]
    if not ordered:
        return None, ()
    return ordered[0], () if cic else tuple(ordered[1:])  # only UNSW-NB15 has a 0/1 flag beside its class


#: How the two feature families are named in messages.
FAMILY_NAMES: dict[str, str] = {"cic": "CICFlowMeter (CIC)", "unsw": "UNSW-NB15"}


def missing_features_advice(missing: Iterable[str], trained_on: str, data_family: str) -> str:
    """What would let a bundle trained on ``trained_on`` features score data of ``data_family`` that lacks
    ``missing`` of them: a bundle trained on that kind of data; for CIC data that lacks only what newer CIC
    meters add, a portable bundle; otherwise a bundle trained without the missing features."""
    missing = list(missing)
    if data_family != trained_on:
        return (
            f"the bundle was trained on {FAMILY_NAMES.get(trained_on, trained_on)} features and the data has "
            f"{FAMILY_NAMES.get(data_family, data_family)} features: train a bundle on this kind of data"
        )
    if trained_on == "cic" and not set(missing) & set(PORTABLE_CIC_FEATURES):
        return "a bundle trained with `[features] portable = true` needs only what every CIC meter writes"
    listed = ", ".join(f'"{name}"' for name in missing)
    return f"the meter that wrote this data lacks them: train a bundle without them (`[features] exclude = [{listed}]`)"


def family_of(features: Iterable[str]) -> str:
    """``"cic"``, ``"unsw"`` or ``"mixed"``: which vocabulary a set of canonical features belongs to."""
    names = set(features)
    cic, unsw = bool(names & set(_CIC)), bool(names & set(_UNSW))
    if cic and unsw:
        return "mixed"
    return "unsw" if unsw else "cic"
