"""A webhook target is checked by the http adapter's URL check (characters,
syntax, scheme, host) and allow-list, plus the rules of its own: length,
credentials, fragment, https unless --webhook-allow names the host."""

from __future__ import annotations

import pytest

from runwire.adapters.http import EgressPolicy, parse_http_url
from runwire.webhooks import target_problem

ALLOW = EgressPolicy.parse(("hooks.internal", "*.svc.local", "127.0.0.1", "10.9.0.0/16"))


@pytest.mark.parametrize(
    "url",
    [
        "https://1.1.1.1/a b",
        "https://1.1.1.1/\t",
        "https://1.1.1.1/\x85",  # NEL: a C1 control, and whitespace
        "https://1.1.1.1/\x9b",  # CSI: a C1 control the webhook check once let through
        "https://1.1.1.1/\u2028",
        "ftp://1.1.1.1/x",
        "https:///x",
        "https://[::1/x",
    ],
)
def test_webhook_targets_fail_the_http_adapters_url_check_with_its_words(url: str) -> None:
    adapter = parse_http_url(url)
    assert isinstance(adapter, str)
    assert target_problem(url, ALLOW) == adapter.replace("use http or https", "use https")


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://1.1.1.1/" + "x" * 2048, "must be at most 2048 characters"),
        (
            "https://u:p@1.1.1.1/x",
            "must not carry credentials; receivers check the signature instead",
        ),
        ("https://1.1.1.1/x#frag", "must not have a fragment"),
        ("http://1.1.1.1/x", "must use https (http only to a host on --webhook-allow)"),
        ("http://hooks.example.com/x", "must use https (http only to a host on --webhook-allow)"),
        ("http://10.8.0.1/x", "must use https (http only to a host on --webhook-allow)"),
        ("https://1.1.1.1/x", None),
        ("http://hooks.internal/x", None),
        ("http://HOOKS.internal./x", None),
        ("http://a.svc.local:8080/x", None),
        ("http://127.0.0.1:9/x", None),
        ("http://10.9.3.4/x", None),
        ("http://[::ffff:10.9.3.4]/x", None),  # the allow-list covers the address it carries
    ],
)
def test_webhook_targets_own_rules_and_the_allow_list(url: str, problem: str | None) -> None:
    assert target_problem(url, ALLOW) == problem
