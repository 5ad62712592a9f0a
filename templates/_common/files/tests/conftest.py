"""The p2phost SDK's pytest plugin: conformance kits and fixtures for every plugin kind."""

pytest_plugins = ["p2phost_sdk.testing"]
