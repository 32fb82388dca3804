"""Tokens, grants and certificates: the pure parts of phxq.security."""

from __future__ import annotations

import datetime
import ssl
import stat
from pathlib import Path

import pytest

from phxq.config import ConfigError, parse_config
from phxq.errors import BadArgument, Forbidden, Unauthenticated
from phxq.security import (
    Credentials,
    Permission,
    Principals,
    check,
    make_ca,
    make_member_cert,
    new_token,
    token_sha256,
)
from phxq.security.principals import parse_grant
from phxq.security.setup import issue_certs


def test_tokens_are_random_and_hash_to_64_hex_digits() -> None:
    a, b = new_token(), new_token()
    assert a != b and len(a) >= 43
    assert len(token_sha256(a)) == 64 and int(token_sha256(a), 16) >= 0


def test_authenticate_finds_the_principal_and_hides_the_token() -> None:
    token = new_token()
    principals = Principals([("svc", token_sha256(token), ["produce:orders"])])
    who = principals.authenticate(token)
    assert who.name == "svc"
    assert token not in repr(principals) and token not in repr(who)
    for bad in (token + "x", "", None, 42, "x" * 5000):
        with pytest.raises(Unauthenticated) as info:
            principals.authenticate(bad)
        assert token not in str(info.value)


@pytest.mark.parametrize(
    ("grant", "need", "allowed"),
    [
        ("produce:orders", Permission.produce("orders"), True),
        ("produce:orders", Permission.produce("orders2"), False),
        ("produce:ord*", Permission.produce("orders2"), True),
        ("consume:orders:billing", Permission.consume("orders", "billing"), True),
        ("consume:orders:billing", Permission.consume("orders", "audit"), False),
        ("consume:orders:billing", Permission.consume("orders", None), True),  # tail
        ("consume:orders:*", Permission.consume("orders", "anything"), True),
        ("consume:orders:billing", Permission.produce("orders"), False),
        ("admin", Permission.admin(), True),
        ("admin", Permission.consume("x", "y"), True),
        ("*", Permission.admin(), True),
        ("*", Permission.member(), False),
        ("admin", Permission.member(), False),
        ("produce:*", Permission.admin(), False),
        ("produce:a.b", Permission.produce("aXb"), False),  # '.' is literal, not a regex dot
    ],
)
def test_grants(grant: str, need: Permission, allowed: bool) -> None:
    principals = Principals([("p", token_sha256("t"), [grant])])
    who = principals.authenticate("t")
    if allowed:
        check(who, need)
    else:
        with pytest.raises(Forbidden) as info:
            check(who, need)
        assert info.value.data["permission"] == str(need)


@pytest.mark.parametrize("bad", ["", "produce", "produce:", "consume:orders", "root", "admin:x", 3])
def test_malformed_grants_are_refused(bad: object) -> None:
    with pytest.raises(BadArgument):
        parse_grant(bad)


BASE = """
[[store]]
id = 1
addr = "127.0.0.1:7101"
data = "s1"
{node}
{extra}
"""


def test_security_config_requires_member_certs_and_valid_principals(tmp_path: Path) -> None:
    node = 'cert = "c/s1.pem"\nkey = "c/s1.key"'
    digest = token_sha256("t")
    ok = parse_config(
        BASE.format(
            node=node,
            extra=f'[security]\nca = "c/ca.pem"\n[[principal]]\nname = "a"\n'
            f'token_sha256 = "{digest}"\nallow = ["admin"]\n[client]\ntoken_file = "t"',
        ),
        base_dir=tmp_path,
    )
    assert ok.security is not None and ok.security.ca == tmp_path / "c" / "ca.pem"
    assert ok.stores[0].cert == tmp_path / "c" / "s1.pem"
    assert ok.principals[0].allow == ("admin",) and digest not in repr(ok.principals[0])
    assert ok.client is not None and ok.client.token_file == tmp_path / "t"
    bad = {
        "store[0].cert": BASE.format(node="", extra='[security]\nca = "ca.pem"'),
        "needs a [security]": BASE.format(
            node=node,
            extra=f'[[principal]]\nname = "a"\ntoken_sha256 = "{digest}"\nallow = ["admin"]',
        ),
        "64 lowercase hex": BASE.format(
            node=node,
            extra='[security]\nca = "x"\n[[principal]]\nname = "a"\ntoken_sha256 = "abc"\n'
            'allow = ["admin"]',
        ),
        "bad grant": BASE.format(
            node=node,
            extra=f'[security]\nca = "x"\n[[principal]]\nname = "a"\ntoken_sha256 = "{digest}"\n'
            'allow = ["root"]',
        ),
    }
    for expected, text in bad.items():
        with pytest.raises(ConfigError, match=expected.replace("[", r"\[")):
            parse_config(text)


def test_member_certificates_verify_against_their_ca_only(tmp_path: Path) -> None:
    issued = issue_certs(tmp_path / "certs", {"store-1": ["127.0.0.1"]})
    cert, key = issued["store-1"]
    for path in (cert, key, tmp_path / "certs" / "ca.key"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(tmp_path / "certs" / "ca.pem")
    ctx.load_cert_chain(cert, key)  # the pair matches
    other_ca, other_key = make_ca()
    old = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=30)
    expired, _ = make_member_cert(other_ca, other_key, "x", days=1, not_before=old)
    assert b"BEGIN CERTIFICATE" in expired
    # A second issue_certs reuses the CA: both members chain to the same root.
    before = (tmp_path / "certs" / "ca.pem").read_bytes()
    issue_certs(tmp_path / "certs", {"lock-1": []})
    assert (tmp_path / "certs" / "ca.pem").read_bytes() == before


def test_credentials_never_show_the_token() -> None:
    token = new_token()
    creds = Credentials.for_client(token=token)
    assert creds.ssl is not None and creds.ssl.check_hostname
    assert token not in repr(creds)
    with pytest.raises(Unauthenticated):
        Credentials.for_client(token="")


def test_member_certificate_reloads_in_place_and_a_bad_reload_keeps_the_old(
    tmp_path: Path,
) -> None:
    from phxq.security.daemon import MemberSecurity

    issue_certs(tmp_path / "c", {"member": ["127.0.0.1"]}, days=90)
    cfg = parse_config(
        BASE.format(
            node='cert = "c/member.pem"\nkey = "c/member.key"',
            extra='[security]\nca = "c/ca.pem"\ncert = "c/member.pem"\nkey = "c/member.key"',
        ),
        base_dir=tmp_path,
    )
    member = MemberSecurity.build(cfg)
    assert member is not None
    context = member.ssl
    assert 89 < member.cert_status()["expires_in_days"] <= 90
    issue_certs(tmp_path / "c", {"member": ["127.0.0.1"]}, days=30)
    member.reload(cfg)
    assert member.ssl is context  # the clients' context, updated for their next connections
    assert 29 < member.cert_status()["expires_in_days"] <= 30
    (tmp_path / "c" / "member.key").write_text("not a key")
    with pytest.raises(ConfigError):
        member.reload(cfg)
    assert 29 < member.cert_status()["expires_in_days"] <= 30
