"""The kube-proxy configuration the rule compilers need (``KubeProxyConfiguration``).

:class:`ProxyConfig` keeps the subset of kube-proxy's configuration
(``pkg/proxy/apis/config/types.go``) that decides which rules a proxier
writes, with kube-proxy's defaults (``v1alpha1/defaults.go``) and validation
(``validation/validation.go``). It describes *one* proxier: kube-proxy runs one
per IP family (``ip_family``), so a dual-stack node is two NodeViews.

Values are checked when the object is built; every problem is reported at once
in a :class:`~kservice.errors.ConfigError`, each in the API machinery's
``field: Invalid value: ...: detail`` form with kube-proxy's field names.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

from kservice.api import validation as _v
from kservice.errors import ConfigError, FieldError

__all__ = [
    "DETECT_LOCAL_MODES",
    "IPVS_SCHEDULERS",
    "IP_FAMILIES",
    "NODE_PORT_ADDRESSES_PRIMARY",
    "PROXY_MODES",
    "ProxyConfig",
]

#: The Linux proxy modes (``ProxyModeIPTables``, ``ProxyModeIPVS``, ``ProxyModeNFTables``).
PROXY_MODES = ("iptables", "ipvs", "nftables")
#: ``v1.IPFamily`` values; a proxier handles exactly one.
IP_FAMILIES = ("IPv4", "IPv6")
#: ``LocalMode`` values: how a proxier tells pod-originated ("local") traffic apart.
DETECT_LOCAL_MODES = ("BridgeInterface", "ClusterCIDR", "InterfaceNamePrefix", "NodeCIDR")
#: The IPVS schedulers kube-proxy accepts (``IPVSSchedulerMethod``); blank means ``rr``.
IPVS_SCHEDULERS = ("dh", "lblc", "lblcr", "lc", "mh", "nq", "rr", "sed", "sh", "wlc", "wrr")
#: ``NodePortAddressesPrimary``: accept NodePorts only on the node's primary IP(s).
NODE_PORT_ADDRESSES_PRIMARY = "primary"

_DEFAULT_MASQUERADE_BIT = 14  # SetDefaults_KubeProxyConfiguration
_DEFAULT_SCHEDULER = "rr"  # ipvs proxier: "IPVS scheduler not specified, use rr by default"
_PATH = "KubeProxyConfiguration"


def _str_tuple(value: Any) -> tuple[str, ...]:
    """A list flag: a comma-separated string (kube-proxy's ``--cluster-cidr``) or an iterable."""
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(part for part in (p.strip() for p in value.split(",")) if part)
    return tuple(value)


def _mode(value: Any) -> Any:
    """Blank means the best-available mode: iptables on Linux."""
    return "iptables" if value in (None, "") else value


def _detect_local_mode(value: Any) -> Any:
    """Blank means ClusterCIDR."""
    return "ClusterCIDR" if value in (None, "") else value


def _scheduler(value: Any) -> Any:
    """Blank means the default IPVS scheduler, rr."""
    return _DEFAULT_SCHEDULER if value in (None, "") else value


@attrs.frozen
class ProxyConfig:
    """What one kube-proxy proxier is configured with (the fields compilers need).

    ``mode`` and ``ip_family`` pick the backend and the family; ``cluster_cidrs``
    (``--cluster-cidr``, one CIDR or a dual-stack pair, also given as a
    comma-separated string) with ``detect_local_mode`` decides which sources are
    pods; ``masquerade_all`` / ``masquerade_bit`` drive SNAT;
    ``node_port_addresses`` (CIDRs, or just ``"primary"``; empty means every
    node IP) limits where NodePorts listen; ``localhost_nodeports`` is the
    iptables-only, IPv4-only ``route_localnet`` behaviour; ``ipvs_scheduler`` is
    the IPVS scheduler; ``service_proxy_name`` selects the Services labelled
    ``service.kubernetes.io/service-proxy-name`` with that value (empty: the
    Services without the label). ``prefer_same_traffic_distribution`` is the
    ``PreferSameTrafficDistribution`` feature gate (node hints; on by default
    since it went beta in Kubernetes 1.34).
    """

    mode: str = attrs.field(default="iptables", converter=_mode)
    ip_family: str = "IPv4"
    cluster_cidrs: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    detect_local_mode: str = attrs.field(default="ClusterCIDR", converter=_detect_local_mode)
    bridge_interface: str = ""
    interface_name_prefix: str = ""
    masquerade_all: bool = False
    masquerade_bit: int = _DEFAULT_MASQUERADE_BIT
    node_port_addresses: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    localhost_nodeports: bool = True
    ipvs_scheduler: str = attrs.field(default=_DEFAULT_SCHEDULER, converter=_scheduler)
    ipvs_strict_arp: bool = False
    service_proxy_name: str = ""
    prefer_same_traffic_distribution: bool = True

    def __attrs_post_init__(self) -> None:
        errors = _validate(self)
        if errors:
            raise ConfigError("invalid proxy configuration: " + "; ".join(str(e) for e in errors))

    # -- derived (never stored twice) --------------------------------------------
    @property
    def is_ipv6(self) -> bool:
        return self.ip_family == "IPv6"

    @property
    def masquerade_value(self) -> int:
        """The fwmark bit kube-proxy sets on packets to SNAT: ``1 << masquerade_bit``."""
        return 1 << self.masquerade_bit

    @property
    def masquerade_mark(self) -> str:
        """The mark text kube-proxy writes: Go's ``fmt.Sprintf("%#08x", 1<<bit)``.

        That is ``0x00004000`` for the default bit 14 (eight digits: Go's ``0``
        flag pads the digits, not the ``0x``). ``iptables-save`` prints marks
        without the padding (``0x4000``), and upstream's fake proxier uses
        ``"0x4000"``; renderers choose the form they print.
        """
        return f"0x{self.masquerade_value:08x}"

    @property
    def uses_primary_node_port_addresses(self) -> bool:
        """``nodePortAddresses: ["primary"]``: only the node's primary IPs."""
        return self.node_port_addresses == (NODE_PORT_ADDRESSES_PRIMARY,)

    @property
    def localhost_nodeports_enabled(self) -> bool:
        """Whether NodePorts answer on 127.0.0.0/8: iptables mode, IPv4 and the flag set.

        (``localhostNodePorts`` "applies only to iptables mode and IPv4;
        localhost NodePorts are never allowed with other proxy modes or with
        IPv6".)
        """
        return self.localhost_nodeports and self.mode == "iptables" and not self.is_ipv6

    def cluster_cidr_for_family(self) -> str | None:
        """The first ``cluster_cidrs`` entry of this proxier's family, canonical (or None).

        Mirrors ``getLocalDetectors``: ``MapCIDRsByIPFamily(clusterCIDRs)[family][0]``.
        """
        for text in self.cluster_cidrs:
            net = _v.parse_cidr(text.strip())
            if net is not None and _family_of_version(net.version) == self.ip_family:
                return str(net)
        return None

    def to_dict(self) -> dict[str, Any]:
        """The configuration in kube-proxy's own (camelCase) field names."""
        return {
            "mode": self.mode,
            "ipFamily": self.ip_family,
            "clusterCIDR": ",".join(self.cluster_cidrs),
            "detectLocalMode": self.detect_local_mode,
            "detectLocal": {
                "bridgeInterface": self.bridge_interface,
                "interfaceNamePrefix": self.interface_name_prefix,
            },
            "masqueradeAll": self.masquerade_all,
            "masqueradeBit": self.masquerade_bit,
            "nodePortAddresses": list(self.node_port_addresses),
            "localhostNodePorts": self.localhost_nodeports,
            "ipvs": {"scheduler": self.ipvs_scheduler, "strictARP": self.ipvs_strict_arp},
            "serviceProxyName": self.service_proxy_name,
            "featureGates": {
                "PreferSameTrafficDistribution": self.prefer_same_traffic_distribution
            },
        }


def _family_of_version(version: int) -> str:
    return "IPv4" if version == 4 else "IPv6"


def _validate(cfg: ProxyConfig) -> list[FieldError]:
    """kube-proxy's ``Validate`` for the kept fields, in its order and words."""
    errs: list[FieldError] = []
    if isinstance(cfg.masquerade_bit, bool) or not isinstance(cfg.masquerade_bit, int):
        errs.append(
            FieldError.invalid(
                f"{_PATH}.IPTables.MasqueradeBit", cfg.masquerade_bit, "must be an integer"
            )
        )
    elif not 0 <= cfg.masquerade_bit <= 31:
        errs.append(
            FieldError.invalid(
                f"{_PATH}.IPTables.MasqueradeBit",
                cfg.masquerade_bit,
                "must be within the range [0, 31]",
            )
        )
    if cfg.mode == "ipvs" and cfg.ipvs_scheduler not in IPVS_SCHEDULERS:
        errs.append(
            FieldError.invalid(
                f"{_PATH}.IPVS.Scheduler",
                cfg.ipvs_scheduler,
                f"must be in [{' '.join(IPVS_SCHEDULERS)}], "
                "blank means the default algorithm method (currently rr)",
            )
        )
    if cfg.mode not in PROXY_MODES:
        errs.append(
            FieldError.invalid(
                f"{_PATH}.Mode",
                cfg.mode,
                f"must be {','.join(PROXY_MODES)} or blank "
                "(blank means the best-available proxy [currently iptables])",
            )
        )
    if cfg.ip_family not in IP_FAMILIES:
        errs.append(FieldError.not_supported(f"{_PATH}.IPFamily", cfg.ip_family, IP_FAMILIES))
    errs += _validate_cluster_cidrs(cfg.cluster_cidrs)
    if cfg.detect_local_mode not in DETECT_LOCAL_MODES:
        errs.append(
            FieldError.not_supported(
                f"{_PATH}.DetectLocalMode", cfg.detect_local_mode, DETECT_LOCAL_MODES
            )
        )
    elif cfg.detect_local_mode == "BridgeInterface" and not cfg.bridge_interface:
        errs.append(
            FieldError.invalid(
                f"{_PATH}.DetectLocal.BridgeInterface", cfg.bridge_interface, "must not be empty"
            )
        )
    elif cfg.detect_local_mode == "InterfaceNamePrefix" and not cfg.interface_name_prefix:
        errs.append(
            FieldError.invalid(
                f"{_PATH}.DetectLocal.InterfaceNamePrefix",
                cfg.interface_name_prefix,
                "must not be empty",
            )
        )
    errs += _validate_node_port_addresses(cfg.node_port_addresses)
    return errs


def _validate_cluster_cidrs(cidrs: Iterable[str]) -> list[FieldError]:
    cidrs = tuple(cidrs)
    if not cidrs:
        return []
    path = f"{_PATH}.DetectLocal.ClusterCIDRs"
    value = ",".join(cidrs)
    if len(cidrs) > 2:
        return [
            FieldError.invalid(
                path,
                value,
                "only one CIDR allowed or a valid DualStack CIDR "
                "(e.g. 10.100.0.0/16,fde4:8dba:82e1::/48)",
            )
        ]
    nets = [_v.parse_cidr(c) for c in cidrs]
    if len(cidrs) == 2:
        if None in nets or nets[0].version == nets[1].version:  # type: ignore[union-attr]
            return [
                FieldError.invalid(
                    path,
                    value,
                    "must be a valid DualStack CIDR (e.g. 10.100.0.0/16,fde4:8dba:82e1::/48)",
                )
            ]
        return []
    if nets[0] is None:
        return [
            FieldError.invalid(
                path,
                value,
                "must be a valid CIDR block (e.g. 10.100.0.0/16 or fde4:8dba:82e1::/48)",
            )
        ]
    return []


def _validate_node_port_addresses(addresses: tuple[str, ...]) -> list[FieldError]:
    """``validateKubeProxyNodePortAddress``: CIDRs, or ``primary`` alone."""
    errs: list[FieldError] = []
    path = f"{_PATH}.NodePortAddresses"
    for i, value in enumerate(addresses):
        if value == NODE_PORT_ADDRESSES_PRIMARY:
            if i != 0 or len(addresses) != 1:
                errs.append(
                    FieldError.invalid(f"{path}[{i}]", value, "can't use both 'primary' and CIDRs")
                )
            break
        if _v.parse_cidr(value) is None:
            errs.append(FieldError.invalid(f"{path}[{i}]", value, "must be a valid CIDR"))
    return errs
