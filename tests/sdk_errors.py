"""Exact error codes through the official SDK.

The SDK turns a status code into an IggyError built with default fields and raises a
RuntimeError carrying only its text, so the text names the code exactly. These are the texts
apache-iggy 0.9.0 shows for the codes the tests expect (each was read off the SDK answering a
server that returned that code).
"""

from __future__ import annotations

import pytest

SDK_TEXT = {
    3: "Invalid command",
    6: "Invalid identifier",
    20: "Resource with key:  was not found.",
    41: "Unauthorized",
    42: "Invalid credentials",
    43: "Invalid username",
    44: "Invalid password",
    46: "User already exists",
    47: "User inactive",
    48: "Cannot delete user with ID: 0",
    49: "Cannot change permissions for user with ID: 0",
    50: "Invalid personal access token name",
    51: "Personal access token:  for user with ID: 0 already exists",
    52: "User with ID: 0 has reached the maximum number of personal access tokens: 0",
    53: "Invalid personal access token",
    56: "Invalid personal access token expiry",
    1009: "Stream with ID: 0 was not found.",
    2010: "Topic with ID: 0 for stream with ID: 0 was not found.",
    3007: "Partition with ID: 0 for topic with ID: 0 for stream with ID: 0 was not found.",
    3021: "Consumer offset for consumer with ID: 0 was not found.",
    5000: "Consumer group with ID: 0 for topic with ID: 0 was not found.",
    5004: "Consumer group with name:  for topic with ID: 0 already exists.",
    5006: ("Consumer group member with client ID: 0 for group with ID: 0 for topic with ID: 0 "
           "was not found."),
}


async def expect_code(awaitable, code: int):
    """Await an SDK call that must fail with exactly `code`."""
    with pytest.raises(RuntimeError) as e:
        await awaitable
    assert str(e.value) == SDK_TEXT[code], f"expected {code}, got {str(e.value)!r}"
