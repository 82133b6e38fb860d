"""What an alert's class means for a SOC: its MITRE ATT&CK technique and its severity (docs/siem.md, the table).

A bundle's classes are the labels of the data it was trained on (CICIDS2017, CSE-CIC-IDS2018, UNSW-NB15,
or a user's own), spelled as the datasets spell them: ``DoS Hulk``, ``DoS attacks-Hulk``, ``Brute Force -XSS``,
``Infilteration``. :func:`class_meaning` reads a label by the first rule of :data:`RULES` whose pattern it
matches (case-insensitively), so one rule serves every spelling; a label no rule matches (a user's own class,
UNSW-NB15's ``Generic``, a 0/1 flag's ``ATTACK``) has no technique and medium severity, and the benign class
is informational.

A flow classifier sees traffic, not hosts: the technique is what the *traffic* of the class is evidence of,
as the datasets staged it (e.g. CICIDS2017's infiltration is a victim running a downloaded file, whose
traffic is then a port scan from inside: "Infiltration - Portscan" reads as the scan). The table is a
starting point for a SOC's own triage, documented row by row in docs/siem.md; a test keeps the two equal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import IntEnum

ATTACK_FRAMEWORK = "MITRE ATT&CK"
ATTACK_URL = "https://attack.mitre.org"


class Severity(IntEnum):
    """Severity of a verdict, numbered as OCSF's ``severity_id`` (also ECS ``event.severity``)."""

    INFORMATIONAL = 1
    LOW = 2
    MEDIUM = 3
    HIGH = 4
    CRITICAL = 5

    @property
    def caption(self) -> str:
        return self.name.capitalize()


@dataclass(frozen=True, slots=True)
class Technique:
    """One ATT&CK technique (``T1499``) or sub-technique (``T1499.002``), with its tactic."""

    id: str
    name: str
    tactic_id: str
    tactic_name: str

    @property
    def parent_id(self) -> str:
        """The technique's id without the sub-technique (``T1499`` for ``T1499.002``)."""
        return self.id.split(".", 1)[0]

    @property
    def is_subtechnique(self) -> bool:
        return "." in self.id

    @property
    def reference(self) -> str:
        return f"{ATTACK_URL}/techniques/{self.id.replace('.', '/')}/"

    @property
    def parent_reference(self) -> str:
        return f"{ATTACK_URL}/techniques/{self.parent_id}/"

    @property
    def tactic_reference(self) -> str:
        return f"{ATTACK_URL}/tactics/{self.tactic_id}/"


@dataclass(frozen=True, slots=True)
class Rule:
    """Labels matching ``pattern`` (a regular expression, searched case-insensitively) mean ``technique``."""

    pattern: str
    technique: Technique | None
    severity: Severity
    examples: tuple[str, ...]  # dataset labels it is meant for (docs/siem.md shows them; tests check them)


@dataclass(frozen=True, slots=True)
class ClassMeaning:
    technique: Technique | None
    severity: Severity


_DISCOVERY = ("TA0007", "Discovery")
_RECON = ("TA0043", "Reconnaissance")
_IMPACT = ("TA0040", "Impact")
_CREDENTIALS = ("TA0006", "Credential Access")
_INITIAL = ("TA0001", "Initial Access")
_EXECUTION = ("TA0002", "Execution")
_C2 = ("TA0011", "Command and Control")
_LATERAL = ("TA0008", "Lateral Movement")


def _t(technique_id: str, name: str, tactic: tuple[str, str]) -> Technique:
    return Technique(technique_id, name, *tactic)


#: First match wins: specific spellings before general ones ("Brute Force -XSS" is XSS, "DDoS" is not "DoS").
RULES: tuple[Rule, ...] = (
    Rule(r"heartbleed", _t("T1190", "Exploit Public-Facing Application", _INITIAL), Severity.CRITICAL, ("Heartbleed",)),
    Rule(
        r"sql",
        _t("T1190", "Exploit Public-Facing Application", _INITIAL),
        Severity.HIGH,
        ("Web Attack - SQL Injection", "SQL Injection"),
    ),
    Rule(
        r"xss",
        _t("T1059.007", "Command and Scripting Interpreter: JavaScript", _EXECUTION),
        Severity.HIGH,
        ("Web Attack - XSS", "Brute Force -XSS"),
    ),
    Rule(
        r"port ?scan",
        _t("T1046", "Network Service Discovery", _DISCOVERY),
        Severity.MEDIUM,
        ("Portscan", "PortScan", "Infiltration - Portscan"),
    ),
    Rule(
        r"\bddos\b",
        _t("T1498", "Network Denial of Service", _IMPACT),
        Severity.HIGH,
        ("DDoS", "DDoS attacks-LOIC-HTTP", "DDOS attack-HOIC", "DDOS attack-LOIC-UDP"),
    ),
    Rule(
        r"\bdos\b",
        _t("T1499", "Endpoint Denial of Service", _IMPACT),
        Severity.HIGH,
        ("DoS Hulk", "DoS GoldenEye", "DoS Slowloris", "DoS Slowhttptest", "DoS attacks-Hulk", "DoS"),
    ),
    Rule(
        r"brute|patator",
        _t("T1110", "Brute Force", _CREDENTIALS),
        Severity.MEDIUM,
        ("FTP-Patator", "SSH-Patator", "Web Attack - Brute Force", "FTP-BruteForce", "SSH-Bruteforce"),
    ),
    Rule(r"\bbot(net)?s?\b", _t("T1071", "Application Layer Protocol", _C2), Severity.HIGH, ("Botnet", "Bot")),
    Rule(
        r"infilt[e]?ration",
        _t("T1204.002", "User Execution: Malicious File", _EXECUTION),
        Severity.HIGH,
        ("Infiltration", "Infilteration"),
    ),
    Rule(r"fuzzer", _t("T1595.002", "Active Scanning: Vulnerability Scanning", _RECON), Severity.LOW, ("Fuzzers",)),
    Rule(r"reconnaissance", _t("T1595", "Active Scanning", _RECON), Severity.LOW, ("Reconnaissance",)),
    Rule(r"^analysis$", _t("T1595", "Active Scanning", _RECON), Severity.LOW, ("Analysis",)),
    Rule(r"backdoor", _t("T1071", "Application Layer Protocol", _C2), Severity.HIGH, ("Backdoor", "Backdoors")),
    Rule(r"exploit", _t("T1190", "Exploit Public-Facing Application", _INITIAL), Severity.HIGH, ("Exploits",)),
    Rule(r"shellcode", _t("T1059", "Command and Scripting Interpreter", _EXECUTION), Severity.HIGH, ("Shellcode",)),
    Rule(r"worm", _t("T1210", "Exploitation of Remote Services", _LATERAL), Severity.HIGH, ("Worms",)),
)
UNMAPPED = ClassMeaning(None, Severity.MEDIUM)
BENIGN_MEANING = ClassMeaning(None, Severity.INFORMATIONAL)
_COMPILED = tuple((re.compile(rule.pattern, re.IGNORECASE), rule) for rule in RULES)


def class_meaning(label: str, *, is_attack: bool) -> ClassMeaning:
    """The technique and severity of a verdict of class ``label`` (``is_attack``: not the bundle's benign class)."""
    if not is_attack:
        return BENIGN_MEANING
    for pattern, rule in _COMPILED:
        if pattern.search(label):
            return ClassMeaning(rule.technique, rule.severity)
    return UNMAPPED
