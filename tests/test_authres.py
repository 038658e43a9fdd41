"""Authentication-Results read as RFC 8601 says, from the examples of the RFC and from fields
as Gmail and Exchange Online write them; only the trusted server's verdicts count, any text
is read without an error, and what is exported are the last received probe's verdicts."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from exporter import config
from exporter.authres import METHODS, RESULTS, parse, verdicts
from exporter.outcome import Check, Reason
from exporter.result import Findings, ProbeResult
from exporter.serve.metrics import render
from exporter.state import Store

# RFC 8601 appendix B
RFC_SPF = "example.com;\r\n          spf=pass smtp.mailfrom=example.net"
RFC_TWO_DKIM = (
    "example.com;\r\n          dkim=pass (good signature) header.d=mail-router.example.net;"
    "\r\n          dkim=fail (bad signature) header.d=newyork.example.com"
)
RFC_AUTH = (
    "example.com;\r\n          auth=pass (cram-md5) smtp.auth=sender@example.net;\r\n"
    "          spf=pass smtp.mailfrom=example.net"
)
RFC_NONE = "example.org 1; none"
# As Gmail writes it (the header of a message from GitHub)
GMAIL = (
    "mx.google.com;\r\n       dkim=pass header.i=@github.com header.s=pf2014 header.b=1crXUDuJ;"
    "\r\n       spf=pass (google.com: domain of noreply@github.com designates 192.30.252.192 as "
    "permitted sender) smtp.mailfrom=noreply@github.com;\r\n"
    "       dmarc=pass (p=NONE sp=NONE dis=NONE) header.from=github.com"
)
# As Exchange Online writes it: results first, the id as a lone segment after SPF's
EXCHANGE = (
    "spf=none (sender IP is 192.0.2.7) smtp.mailfrom=example.net; hotmail.com; dkim=none "
    "header.d=example.net;hotmail.com; dmarc=none action=none header.from=example.net;"
    "compauth=fail reason=001"
)


@pytest.mark.parametrize(
    ("field", "authserv_id", "pairs"),
    [
        (RFC_SPF, "example.com", [("spf", "pass")]),
        (RFC_TWO_DKIM, "example.com", [("dkim", "pass"), ("dkim", "fail")]),
        (RFC_AUTH, "example.com", [("auth", "pass"), ("spf", "pass")]),
        (RFC_NONE, "example.org", []),
        (GMAIL, "mx.google.com", [("dkim", "pass"), ("spf", "pass"), ("dmarc", "pass")]),
        (
            EXCHANGE,
            "hotmail.com",
            [("spf", "none"), ("dkim", "none"), ("dmarc", "none"), ("compauth", "fail")],
        ),
        ('"quoted.example" ; DKIM = Pass', "quoted.example", [("dkim", "pass")]),
        ("mx.example (with; a (nested) comment); spf/1=fail", "mx.example", [("spf", "fail")]),
    ],
)
def test_parse(field: str, authserv_id: str, pairs: list[tuple[str, str]]) -> None:
    assert parse(field) == (authserv_id, pairs)


def test_only_the_trusted_server_counts() -> None:
    assert verdicts([GMAIL], "mx.google.com") == {"dkim": "pass", "spf": "pass", "dmarc": "pass"}
    assert verdicts([GMAIL], "MX.Google.Com.") == verdicts([GMAIL], "mx.google.com")
    assert verdicts([GMAIL, RFC_SPF], "example.com") == {"spf": "pass"}
    assert verdicts([GMAIL], "example.com") == {}
    assert verdicts([EXCHANGE], "hotmail.com")["compauth"] == "fail"


def test_topmost_trusted_verdict_wins_over_a_forged_one_below() -> None:
    real = "mx.example.test; spf=fail smtp.mailfrom=sender.test"
    forged = "mx.example.test; spf=pass smtp.mailfrom=sender.test; dkim=pass; dmarc=pass"
    dkim = "mx.example.test; dkim=fail header.d=sender.test"
    # topmost first: the server's fields, then what the message arrived with
    assert verdicts([dkim, real, forged], "mx.example.test") == {
        "dkim": "fail",
        "spf": "fail",
        "dmarc": "pass",
    }


def test_two_signatures_in_one_field_pass_if_one_passed() -> None:
    assert verdicts([RFC_TWO_DKIM], "example.com") == {"dkim": "pass"}
    failing = "example.com; dkim=fail header.d=a.example; dkim=neutral header.d=b.example"
    assert verdicts([failing], "example.com") == {"dkim": "fail"}


def test_results_are_a_closed_set_and_other_methods_are_left_out() -> None:
    field = "mx.example; compauth=softpass reason=201; iprev=pass; spf=HardFail; dkim=policy"
    assert verdicts([field], "mx.example") == {
        "compauth": "other",
        "spf": "other",
        "dkim": "policy",
    }
    assert set(verdicts([field], "mx.example").values()) <= set(RESULTS)


# Property tests: any field text ends in an id and pairs, and verdicts from the trusted id only.

SPECIALS = st.sampled_from(
    ('"', "\\", "(", ")", ";", "=", "/", " ", "\r\n ", "spf", "dkim", "pass", "mx.example", ".")
)
FIELDS = st.one_of(
    st.text(max_size=300),
    st.lists(SPECIALS | st.text(max_size=6), max_size=40).map("".join),
)


@settings(derandomize=True, max_examples=200, deadline=None)
@given(FIELDS)
def test_parse_any_text(field: str) -> None:
    authserv_id, pairs = parse(field)
    assert authserv_id == authserv_id.lower() and not authserv_id.endswith(".")
    for method, result in pairs:
        assert method == method.lower() and result == result.lower() and method and result


@settings(derandomize=True, max_examples=200, deadline=None)
@given(st.lists(FIELDS, max_size=6), st.sampled_from(("mx.example", "", "MX.example.")) | FIELDS)
def test_verdicts_of_any_fields_come_from_the_trusted_id_only(
    fields: list[str], authserv_id: str
) -> None:
    found = verdicts(fields, authserv_id)
    assert set(found) <= set(METHODS) and set(found.values()) <= set(RESULTS)
    trusted = authserv_id.lower().rstrip(".")
    assert found == verdicts([f for f in fields if parse(f)[0] == trusted], authserv_id)


# What is exported: the verdicts of the last probe that arrived, all of them and only them.

STORE_CONFIG = """
targets:
  - name: a
    checks: [roundtrip]
    authserv_id: mx.example
    smtp: {host: h, username: u@x.org, password: p}
    imap: {host: h, username: u@x.org, password: p}
"""


def _exported(store: Store) -> dict[str, str]:
    """The verdict exported for each method (the result whose gauge is 1)."""
    return {
        sample.labels["method"]: sample.labels["result"]
        for family in text_string_to_metric_families(render(store))
        for sample in family.samples
        if sample.name == "mailbox_authentication_result" and sample.value == 1
    }


def _roundtrip(arrived: bool, found: dict[str, str]) -> ProbeResult:
    return ProbeResult(
        target="a",
        check=Check.ROUNDTRIP,
        success=arrived,
        started=time.time(),
        duration=1.0,
        reason=None if arrived else Reason.NOT_DELIVERED,
        found=Findings(delivery_seconds=0.5 if arrived else None, authentication=found),
    )


def test_the_verdicts_exported_are_those_of_the_last_probe_that_arrived() -> None:
    store = Store()
    store.configure(config.parse(STORE_CONFIG))
    store.record(_roundtrip(True, {"spf": "pass", "dkim": "pass", "dmarc": "pass"}))
    assert _exported(store) == {"spf": "pass", "dkim": "pass", "dmarc": "pass"}
    store.record(_roundtrip(True, {"spf": "fail", "dmarc": "fail"}))
    assert _exported(store) == {"spf": "fail", "dmarc": "fail"}, "dkim no longer reported"
    store.record(_roundtrip(False, {}))
    assert _exported(store) == {"spf": "fail", "dmarc": "fail"}, "a probe that never arrived"
    store.record(_roundtrip(True, {}))
    assert _exported(store) == {}, "the server reported none on the last probe"
