"""bouheki: per-unit egress control for systemd hosts with BPF LSM."""

__version__ = "0.1.0"
