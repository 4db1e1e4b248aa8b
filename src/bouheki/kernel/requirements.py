"""Why BPF LSM enforcement cannot start here, in words an admin can act on."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

MIN_KERNEL = (5, 8)  # BPF LSM (5.7) and the BPF ring buffer (5.8)


class KernelUnsupported(RuntimeError):
    """Enforcement is impossible on this machine; the message says why and what to do."""


@dataclass(frozen=True)
class Host:
    """What the checks read, gathered in one place so tests can pass their own."""

    release: str
    lsm: str | None  # contents of /sys/kernel/security/lsm, None if unreadable
    btf: bool
    headers: bool
    euid: int

    @classmethod
    def probe(cls) -> Host:
        release = platform.release()
        try:
            lsm: str | None = Path("/sys/kernel/security/lsm").read_text().strip()
        except OSError:
            lsm = None
        return cls(
            release=release,
            lsm=lsm,
            btf=Path("/sys/kernel/btf/vmlinux").exists(),
            headers=Path(f"/lib/modules/{release}/build").exists(),
            euid=os.geteuid(),
        )


def kernel_version(release: str) -> tuple[int, int]:
    parts = release.split("-", 1)[0].split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return (0, 0)


def problems(host: Host) -> list[str]:
    """Every unmet requirement, each with its remedy. Empty: try to load."""
    out = []
    if kernel_version(host.release) < MIN_KERNEL:
        out.append(
            f"kernel {host.release} is too old: BPF LSM with a ring buffer needs "
            f"{MIN_KERNEL[0]}.{MIN_KERNEL[1]} or newer"
        )
    if host.lsm is None:
        out.append(
            "/sys/kernel/security/lsm is unreadable: mount securityfs "
            "(mount -t securityfs securityfs /sys/kernel/security)"
        )
    elif "bpf" not in host.lsm.split(","):
        out.append(
            f"'bpf' is not an active LSM (active: {host.lsm}): add it to the kernel command "
            f"line, e.g. lsm={host.lsm},bpf in GRUB_CMDLINE_LINUX, then update-grub and reboot"
        )
    if not host.btf:
        out.append(
            "the kernel has no BTF (/sys/kernel/btf/vmlinux): it needs CONFIG_DEBUG_INFO_BTF=y"
        )
    if not host.headers:
        out.append(
            f"no kernel headers at /lib/modules/{host.release}/build: install the headers "
            f"of the running kernel ({headers_packages(host.release)})"
        )
    if host.euid != 0:
        out.append("bouheki must run as root (CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN)")
    return out


def headers_packages(release: str) -> str:
    """Which package to install for the headers of `release`. The package
    cannot depend on them (Architecture: all; and the flavour is the running
    kernel's, cloud or rt or backports, which no dependency can name)."""
    exact = f"linux-headers-{release}"
    # Debian's release is VERSION-ABI-FLAVOUR (6.1.0-57-cloud-amd64): the
    # flavour's metapackage follows the kernel's upgrades.
    parts = release.split("-", 2)
    if len(parts) == 3 and parts[1].isdigit() and parts[2]:
        return f"Debian: {exact}, and linux-headers-{parts[2]} to follow kernel upgrades"
    return f"Debian: {exact}; Fedora: kernel-devel-{release}"


def check(host: Host | None = None) -> None:
    found = problems(host or Host.probe())
    if found:
        raise KernelUnsupported("BPF LSM enforcement is unavailable: " + "; ".join(found))


def explain_load_error(exc: BaseException) -> KernelUnsupported:
    """bcc says little when the kernel refuses a program; say what it usually means."""
    text = str(exc)
    if "Operation not permitted" in text or "super-user" in text or getattr(exc, "errno", 0) == 1:
        return KernelUnsupported(
            "the kernel refused to load the BPF LSM programs (EPERM): run as root with "
            "CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN, check that lockdown does not forbid BPF "
            "(/sys/kernel/security/lockdown), and that 'bpf' is in /sys/kernel/security/lsm "
            f"({text})"
        )
    return KernelUnsupported(f"loading the BPF programs failed: {text}")
