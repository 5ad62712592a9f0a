"""Acknowledged delivery: the outbox, the receiver, dedupe, dead letters, the delivery
database and its writer thread, and ACK frames (docs/delivery.md)."""
