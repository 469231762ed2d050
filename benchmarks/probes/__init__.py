"""Probes: measurements that explain a benchmark's figures (`op_profile`, `int8_probe`)."""
