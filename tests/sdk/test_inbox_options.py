"""An inbox transport's retention limits from ``[config.NAME]``: a value no broker can
honour is a ConfigError naming the field, not a quietly different limit or a send that
fails later (the schema checks only the type, and TOML has -1, inf and nan)."""

from __future__ import annotations

import math

import pytest

from p2phost_sdk import ConfigError
from p2phost_sdk.inbox import InboxOptions


@pytest.mark.parametrize("value", [-1.0, -0.5, math.inf, math.nan, 2.0**32, 1e300])
def test_a_max_age_no_broker_can_keep_is_refused(value: float) -> None:
    # -1 became MQTT's 1-second expiry (max(1, ceil(-1))): letters dropped unread; 2**32 s
    # does not fit MQTT 5's four-byte expiry, so every stored send failed in struct.pack.
    with pytest.raises(ConfigError) as raised:
        InboxOptions.from_config({"max-age": value}, plugin="mqtt-transport")
    assert "[config.mqtt-transport] max-age" in str(raised.value)


@pytest.mark.parametrize("key", ["max-messages", "max-bytes"])
def test_a_negative_count_limit_is_refused(key: str) -> None:
    with pytest.raises(ConfigError) as raised:
        InboxOptions.from_config({key: -1}, plugin="amqp-transport")
    assert f"[config.amqp-transport] {key}" in str(raised.value)


def test_zero_and_large_limits_stand() -> None:
    assert not InboxOptions.from_config({"max-age": 0}).retention
    kept = InboxOptions.from_config({"max-age": 2.0**32 - 1, "max-bytes": 2**40,
                                     "max-messages": 10**9}).retention
    assert (kept.max_age, kept.max_bytes, kept.max_messages) == (2.0**32 - 1, 2**40, 10**9)
