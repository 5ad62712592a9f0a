"""Delivery declarations: the SDK's Delivery, apps' declarations, and [delivery] in p2phost.toml."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2phost._delivery_settings import DeliverySettings
from p2phost._errors import ManifestError
from p2phost._manifest import Manifest
from p2phost._runtime.delivery._delivery import resolve_policies
from p2phost_sdk import App, Delivery, DeliveryError, DeliveryMode, Message, handler

MANIFEST = """\
[node]
name = "n"

[delivery]
ack-timeout = 2.5
dead-letter-limit = 50
dead-letter-keep = "oldest"

[delivery.orders]
mode = "effectively-once"
immediate-retries = 0

[delivery.audit]
mode = "at-least-once"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p2phost.toml"
    path.write_text(text)
    return path


class Shop(App):
    delivery = {"audit": "at-most-once", "mail": Delivery("at-least-once", delayed_retries=5)}

    @handler("orders", delivery=Delivery("at-least-once", immediate_retries=4))
    async def orders(self, message: Message) -> None:
        pass

    @handler("chat")
    async def chat(self, message: Message) -> None:
        pass


def test_the_manifest_reads_delivery_settings_and_overrides(tmp_path: Path) -> None:
    manifest = Manifest.load(write(tmp_path, MANIFEST))
    settings = manifest.delivery
    assert (settings.ack_timeout, settings.dead_letter_limit, settings.dead_letter_keep) == \
        (2.5, 50, "oldest")
    policies = resolve_policies([Shop()], settings)
    # The handler declared at-least-once with 4 immediate retries; the manifest wins per key.
    assert policies["orders"] == Delivery("effectively-once", immediate_retries=0)
    # The app's mapping said at-most-once for audit; the manifest turns it on.
    assert policies["audit"].mode is DeliveryMode.AT_LEAST_ONCE
    assert policies["mail"].delayed_retries == 5
    assert "chat" not in policies


def test_no_delivery_table_means_defaults(tmp_path: Path) -> None:
    assert Manifest.load(write(tmp_path, "[node]\n")).delivery == DeliverySettings()


@pytest.mark.parametrize(("text", "where", "message"), [
    ("[delivery]\nack-timeout = 0\n", "p2phost.toml:2: delivery.ack-timeout",
     "expected a number of seconds > 0, got 0"),
    ("[delivery]\ndead-letter-keep = \"middle\"\n", "p2phost.toml:2: delivery.dead-letter-keep",
     "expected \"newest\" or \"oldest\""),
    ("[delivery]\nsurprise = 1\n", "p2phost.toml:2: delivery.surprise", "unknown key"),
    ("[delivery.orders]\nmode = \"twice\"\n", "p2phost.toml:2: delivery.orders.mode",
     "'twice' is not a delivery mode"),
    ("\n[delivery.orders]\nimmediate-retries = -1\n",
     "p2phost.toml:3: delivery.orders.immediate-retries", "expected a whole number >= 0"),
    ("[delivery.orders]\nretry-backoff = 0.5\n", "p2phost.toml:2: delivery.orders.retry-backoff",
     "expected a number >= 1"),
    ("[delivery.orders]\nretries = 3\n", "p2phost.toml:2: delivery.orders.retries",
     "unknown key"),
])
def test_bad_delivery_settings_name_the_line(tmp_path: Path, text: str, where: str,
                                             message: str) -> None:
    with pytest.raises(ManifestError) as caught:
        Manifest.load(write(tmp_path, text))
    assert str(caught.value).startswith(where) and message in str(caught.value)


def test_delivery_declarations() -> None:
    policy = Delivery("effectively-once", immediate_retries=1, delayed_retries=2,
                      retry_delay=0.5, retry_backoff=3)
    assert policy.mode is DeliveryMode.EFFECTIVELY_ONCE and policy.acknowledged
    assert policy.attempts == 6
    assert [policy.delay(r) for r in range(2)] == [0.5, 1.5]
    assert not Delivery().acknowledged
    assert Delivery.of("at-least-once") == Delivery(DeliveryMode.AT_LEAST_ONCE)
    assert Shop().deliveries()["orders"].immediate_retries == 4
    with pytest.raises(DeliveryError, match="mode: 'often' is not a delivery mode"):
        handler("x", delivery="often")
    with pytest.raises(DeliveryError, match="retry-delay: expected a number > 0"):
        Delivery(retry_delay=-1)
