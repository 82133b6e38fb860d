"""The allowlist: flows that never raise an alert (a vulnerability scanner, a load test, a noisy service).

What Suricata's ``threshold.config`` ``suppress`` gives its users. An entry matches a flow when every condition it
states holds; a flow that any entry matches is scored and counted as usual but raises no alert, and is counted in
``flowwarden_alerts_suppressed_total{reason="allowlist"}`` (never silently). Entries come from a TOML file
(``--allowlist FILE.toml``)::

    [[allow]]
    comment = "the vulnerability scanner"      # shown nowhere; for the people who read the file
    src = ["10.0.5.20/32"]                     # source address in one of these networks
    labels = ["Portscan", "Infiltration - Portscan"]

    [[allow]]
    dst = ["10.1.0.0/16", "2001:db8::/32"]     # destination address in one of these networks
    dst_ports = [53, "5353"]                   # and destination port one of these (PORT or "LOW-HIGH")

Keys: ``src``, ``dst``, ``hosts`` (either address), ``src_ports``, ``dst_ports``, ``labels`` (classes, compared
as :func:`detector.stream.thresholds.class_key`), ``comment``. An unknown key, an empty entry (it would allow
everything), a bad network or port is an error at start-up naming the entry. And from settings, each alone an
entry: ``--allow-networks CIDR`` (``hosts``), ``--allow-ports PORT`` (``dst_ports``), ``--allow-labels CLASS``.
A condition on an address or port that the flow record does not carry does not hold.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from detector.core.tomlfile import TomlFileError, read_toml_file
from detector.stream.thresholds import class_key

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_KEYS = {"src", "dst", "hosts", "src_ports", "dst_ports", "labels", "comment"}


class AllowlistError(ValueError):
    """An allowlist that cannot be used; the message names the file and the entry."""


def network(text: str) -> Network:
    """A CIDR (``10.0.0.0/8``) or a single address (``10.0.0.5``); raises ``ValueError`` saying why not."""
    try:
        return ipaddress.ip_network(str(text).strip(), strict=False)
    except ValueError:
        raise ValueError(f"{text!r} is not a network (CIDR such as 10.0.0.0/8, or an address)") from None


def port_range(value: object) -> tuple[int, int]:
    """``443`` or ``"8000-8080"`` as (low, high); raises ``ValueError`` saying why not."""
    text = str(value).strip()
    low, _, high = text.partition("-")
    try:
        bounds = (int(low), int(high or low))
    except ValueError:
        raise ValueError(f"{value!r} is not a port or a port range (443, 8000-8080)") from None
    if not 0 <= bounds[0] <= bounds[1] <= 65535:
        raise ValueError(f"{value!r} is not a port or a port range within 0-65535")
    return bounds


@dataclass(frozen=True, slots=True)
class Entry:
    """One allowlist entry; None means the condition is not stated."""

    src: tuple[Network, ...] | None = None
    dst: tuple[Network, ...] | None = None
    hosts: tuple[Network, ...] | None = None
    src_ports: tuple[tuple[int, int], ...] | None = None
    dst_ports: tuple[tuple[int, int], ...] | None = None
    labels: frozenset[str] | None = None

    def matches(self, flow: Mapping[str, Any], label: str) -> bool:
        if self.labels is not None and class_key(label) not in self.labels:
            return False
        src, dst = _address(flow.get("src_ip")), _address(flow.get("dst_ip"))
        if self.src is not None and not _within(src, self.src):
            return False
        if self.dst is not None and not _within(dst, self.dst):
            return False
        if self.hosts is not None and not (_within(src, self.hosts) or _within(dst, self.hosts)):
            return False
        if self.src_ports is not None and not _port_in(flow.get("src_port"), self.src_ports):
            return False
        return self.dst_ports is None or _port_in(flow.get("dst_port"), self.dst_ports)


class Allowlist:
    """Entries of a file and of settings; :meth:`allows` tells whether one of them matches a flow."""

    def __init__(self, entries: Iterable[Entry] = ()) -> None:
        self.entries = tuple(entries)

    def __len__(self) -> int:
        return len(self.entries)

    def allows(self, flow: Mapping[str, Any], label: str) -> bool:
        """Whether an entry matches the flow (its alert ``flow`` object) classified as ``label``."""
        return any(entry.matches(flow, label) for entry in self.entries)

    @classmethod
    def from_settings(
        cls,
        path: Path | None = None,
        networks: Iterable[str] = (),
        ports: Iterable[str] = (),
        labels: Iterable[str] = (),
    ) -> Allowlist:
        """The entries of the file at ``path`` (if any) and one entry per network, port and label setting.
        Raises :class:`AllowlistError`."""
        entries = list(read_allowlist(path)) if path is not None else []
        entries += [Entry(hosts=(network(text),)) for text in networks]
        entries += [Entry(dst_ports=(port_range(text),)) for text in ports]
        entries += [Entry(labels=frozenset({class_key(text)})) for text in labels]
        return cls(entries)


def read_allowlist(path: Path) -> list[Entry]:
    """The ``[[allow]]`` entries of a TOML file; raises :class:`AllowlistError` naming what is wrong."""
    try:
        document = read_toml_file(path)
    except TomlFileError as exc:
        raise AllowlistError(f"allowlist {path} {exc}") from None
    unknown = sorted(set(document) - {"allow"})
    if unknown:
        raise AllowlistError(f"allowlist {path}: unknown table(s) {', '.join(unknown)}; entries are [[allow]]")
    raw = document.get("allow", [])
    if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
        raise AllowlistError(f"allowlist {path}: 'allow' must be an array of tables ([[allow]])")
    return [_entry(item, f"allowlist {path}, entry {number}") for number, item in enumerate(raw, start=1)]


def _entry(item: Mapping[str, Any], where: str) -> Entry:
    unknown = sorted(set(item) - _KEYS)
    if unknown:
        raise AllowlistError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(_KEYS))})")
    if not set(item) - {"comment"}:
        raise AllowlistError(f"{where}: states no condition, so it would allow every flow")
    try:
        return Entry(
            src=_networks(item, "src"),
            dst=_networks(item, "dst"),
            hosts=_networks(item, "hosts"),
            src_ports=_ports(item, "src_ports"),
            dst_ports=_ports(item, "dst_ports"),
            labels=frozenset(class_key(text) for text in _list(item, "labels")) if "labels" in item else None,
        )
    except ValueError as exc:
        raise AllowlistError(f"{where}: {exc}") from None


def _list(item: Mapping[str, Any], key: str) -> list[Any]:
    value = item[key]
    values = value if isinstance(value, list) else [value]
    if not values:
        raise ValueError(f"{key} is empty, so it would match nothing")
    return values


def _networks(item: Mapping[str, Any], key: str) -> tuple[Network, ...] | None:
    return tuple(network(text) for text in _list(item, key)) if key in item else None


def _ports(item: Mapping[str, Any], key: str) -> tuple[tuple[int, int], ...] | None:
    return tuple(port_range(value) for value in _list(item, key)) if key in item else None


@lru_cache(maxsize=65536)
def _parsed(text: str) -> Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def _address(value: Any) -> Address | None:
    return _parsed(value) if isinstance(value, str) else None


def _within(address: Address | None, networks: tuple[Network, ...]) -> bool:
    return address is not None and any(address.version == net.version and address in net for net in networks)


def _port_in(value: Any, ranges: tuple[tuple[int, int], ...]) -> bool:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        return False
    return any(low <= value <= high for low, high in ranges)
