"""The relay envelope: a delivery crosses the broker byte for byte, and anything else is refused clearly."""

from __future__ import annotations

import pytest

from controller import relay
from controller.relay import EnvelopeError, RelayedRequest
from controller.settings import Settings


def test_round_trip_keeps_the_exact_body_and_odd_header_text() -> None:
    body = b'{ "ref" :"refs/heads/main",\n\t"after":  "abc" }\r\n\x00\xff'  # odd whitespace, NUL, not UTF-8
    request = RelayedRequest(
        "POST",
        "/hooks/team-a",
        {"token": "x"},
        {"x-github-event": "push", "x-odd": "caf\udce9"},  # a header byte aiohttp could not decode
        body,
    )

    back = relay.decode(relay.encode(request))

    assert back == request
    assert back.body == body


def _framed(meta: bytes) -> bytes:
    return b"FWR1" + len(meta).to_bytes(4, "big") + meta


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"", "not a fleet-webhook relay message"),
        (b'{"ref": "x"}', "not a fleet-webhook relay message"),
        (b"FWR1\x00\x00", "truncated"),
        (b"FWR1\x00\x00\x10\x00{}", "does not fit"),
        (b"FWR1\x00\x00\x00\x02[]", "not a JSON object"),
        (b"FWR1\x00\x00\x00\x03{x}", "not JSON"),
        (_framed(b'{"method":"P"}'), "method and path"),
        (_framed(b'{"method":"POST","path":"/","query":{},"headers":1}'), "headers must map"),
    ],
)
def test_anything_else_is_refused_with_the_reason(data: bytes, says: str) -> None:
    with pytest.raises(EnvelopeError, match=says):
        relay.decode(data)


def test_message_id_dedupes_only_byte_identical_retries() -> None:
    first = relay.message_id("github", "d-1", b"body")

    assert first == relay.message_id("github", "d-1", b"body")
    assert first != relay.message_id("github", "d-1", b"forged body")  # a forger cannot pre-empt the real one
    assert first != relay.message_id("gitlab", "d-1", b"body")
    assert relay.message_id("github", None, b"body") is None


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"relay_publish": "http://broker:4222"}, "http://... is not a NATS URL"),
        ({"relay_publish": " , "}, "at least one NATS URL"),
        ({"relay_publish": "nats://a:4222", "relay_consume": "nats://b:4222"}, "not both"),
        ({"relay_consume": "nats://a:4222", "relay_tls_cert_file": "/c.pem"}, "go together"),
        ({"relay_publish": "nats://a:4222", "relay_stream": "has.dot"}, "relay_stream"),
    ],
)
def test_bad_relay_settings_are_refused_naming_the_setting(fields: dict[str, str], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        Settings(**fields)  # type: ignore[arg-type]


def test_unreadable_tls_file_names_the_flag() -> None:
    settings = Settings(relay_consume="tls://a:4222", relay_tls_ca_file="/nonexistent/ca.pem")  # type: ignore[arg-type]
    with pytest.raises(relay.RelayConfigError, match=r"--relay-tls-ca-file /nonexistent/ca\.pem"):
        relay.connect_options(settings, "test")


def test_a_bad_url_exits_2_naming_the_flag_without_repeating_its_password(capsys: pytest.CaptureFixture[str]) -> None:
    from controller.cli import main

    assert main(["serve", "--relay-publish", "http://edge:hunter2@broker:4222"]) == 2
    err = capsys.readouterr().err
    assert "flag --relay-publish" in err
    assert "http://... is not a NATS URL" in err
    assert "hunter2" not in err
