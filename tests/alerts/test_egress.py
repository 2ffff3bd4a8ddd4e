"""Webhooks cannot reach inside: every non-public range is refused, as an address or through a
DNS name, at rule save time and at send time; the request goes to the checked address; no
redirect is followed; the admin's allow list lets named internal hosts through."""

from __future__ import annotations

import ipaddress
from datetime import timedelta

import pytest

from observatory_core.alerts import egress
from observatory_core.alerts.egress import AllowList, Refused, check_target
from observatory_core.alerts.evaluate import evaluate
from observatory_core.alerts.rules import build_rule
from observatory_core.alerts.webhooks import deliver_due, delivery_log
from observatory_core.base.errors import UserError
from tests.alerts.conftest import NOW, firing_rule
from tests.helpers import admin_scope

# (address, words the refusal must contain): one per refused range, IPv4 and IPv6.
REFUSED = [
    ("0.0.0.0", "'this network'"),
    ("0.1.2.3", "'this network'"),
    ("10.0.0.1", "private"),
    ("10.255.255.254", "private"),
    ("100.64.0.1", "shared"),
    ("100.127.255.254", "shared"),
    ("127.0.0.1", "loopback"),
    ("127.255.0.9", "loopback"),
    ("169.254.169.254", "link-local"),  # AWS, GCP and Azure metadata
    ("172.16.0.1", "private"),
    ("172.31.255.254", "private"),
    ("192.0.0.8", "IETF protocol"),
    ("192.0.0.192", "IETF protocol"),  # OCI metadata
    ("192.0.2.10", "documentation"),
    ("192.88.99.1", "6to4 relay"),
    ("192.168.1.1", "private"),
    ("198.18.0.1", "benchmarking"),
    ("198.51.100.7", "documentation"),
    ("203.0.113.9", "documentation"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"),
    ("::", "unspecified"),
    ("::1", "loopback"),
    ("::127.0.0.1", "IPv4-compatible"),
    ("::ffff:127.0.0.1", "IPv6 form of 127.0.0.1, a loopback"),
    ("::ffff:169.254.169.254", "IPv6 form of 169.254.169.254, a link-local"),
    ("::ffff:10.0.0.1", "IPv6 form of 10.0.0.1, a private"),
    ("64:ff9b::a9fe:a9fe", "IPv6 form of 169.254.169.254"),  # NAT64
    ("64:ff9b:1::1", "local NAT64"),
    ("100::1", "discard"),
    ("2001:db8::1", "documentation"),
    ("2002:7f00:1::1", "IPv6 form of 127.0.0.1"),  # 6to4
    ("2002:a00:1::1", "IPv6 form of 10.0.0.1"),
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", "IPv6 form of 127.0.0.1"),  # Teredo
    ("fc00::1", "unique local"),
    ("fd00:ec2::254", "unique local"),  # AWS metadata over IPv6
    ("fe80::1", "link-local"),
    ("fec0::1", "site-local"),
    ("ff02::1", "multicast"),
    ("ff05::1:3", "multicast"),
]
PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8"]


def url_of(address: str, path: str = "/hook") -> str:
    host = f"[{address}]" if ":" in address else address
    return f"http://{host}{path}"


def resolver(table: dict[str, list[str]], calls: list | None = None):
    """A stand-in for DNS: each name answers the addresses given (so tests never use DNS)."""

    def resolve(host, port):
        if calls is not None:
            calls.append(host)
        if host not in table:
            raise OSError(f"[Errno -2] Name or service not known: {host}")
        return [ipaddress.ip_address(a) for a in table[host]]

    return resolve


@pytest.mark.parametrize(("address", "why"), REFUSED)
def test_every_internal_range_is_refused_as_an_address(address, why):
    with pytest.raises(Refused) as refused:
        check_target(url_of(address), AllowList())
    assert why in str(refused.value)
    assert str(ipaddress.ip_address(address)) in str(refused.value)
    assert "OBSERVATORY_WEBHOOK_ALLOW_HOSTS" in str(refused.value)


@pytest.mark.parametrize(("address", "why"), REFUSED)
def test_every_internal_range_is_refused_behind_a_dns_name(monkeypatch, address, why):
    monkeypatch.setattr(egress, "resolve", resolver({"hooks.example.com": [address]}))
    with pytest.raises(Refused) as refused:
        check_target("https://hooks.example.com/services/T0/B0/x", AllowList())
    shown = ipaddress.ip_address(address)
    assert f"hooks.example.com resolves to {shown}, " in str(refused.value) and why in str(
        refused.value
    )


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(monkeypatch, address):
    monkeypatch.setattr(egress, "resolve", resolver({"hooks.example.com": [address]}))
    target = check_target("https://hooks.example.com/x?y=1", AllowList())
    assert (target.host, target.port, target.path) == ("hooks.example.com", 443, "/x?y=1")
    assert target.addresses == (ipaddress.ip_address(address),)


def test_one_internal_address_among_public_ones_is_enough_to_refuse(monkeypatch):
    monkeypatch.setattr(
        egress, "resolve", resolver({"mixed.example.com": ["8.8.8.8", "2606:4700::1", "10.0.0.5"]})
    )
    with pytest.raises(Refused, match="resolves to 10.0.0.5, a private address"):
        check_target("http://mixed.example.com/", AllowList())


@pytest.mark.parametrize(
    "spelling", ["http://2130706433/", "http://0x7f.0.0.1/", "http://127.1/", "http://0177.0.0.1/"]
)
def test_odd_spellings_of_loopback_are_refused(spelling):
    """The system resolver reads these as 127.0.0.1; the check sees what it answered."""
    with pytest.raises(Refused, match="127.0.0.1"):
        check_target(spelling, AllowList())


def test_the_allow_list_names_hosts_addresses_and_networks(monkeypatch):
    monkeypatch.setattr(
        egress,
        "resolve",
        resolver(
            {
                "hooks.internal": ["10.9.9.9"],
                "other.internal": ["10.1.2.3"],
                "team.internal": ["10.20.5.5", "fd12::5"],
                "evil.internal": ["10.21.0.1"],
            }
        ),
    )
    allow = AllowList.parse(["Hooks.Internal.", " 10.1.2.3", "10.20.0.0/16", "fd12::/64", ""])
    for url in ("http://hooks.internal/a", "http://other.internal/", "http://team.internal/"):
        check_target(url, allow)
    with pytest.raises(Refused, match="10.21.0.1"):
        check_target("http://evil.internal/", allow)
    with pytest.raises(UserError, match="neither a host name"):
        AllowList.parse(["10.0.0.0/99"])


def test_rule_save_refuses_internal_targets_with_the_address_named(allow_hosts, monkeypatch):
    base = dict(name="r", series="request_count.count", comparator=">", threshold=1, window_s=300)
    with pytest.raises(UserError, match=r"169\.254\.169\.254 is a link-local address"):
        build_rule(**base, webhook_url="http://169.254.169.254/latest/meta-data/")
    monkeypatch.setattr(egress, "resolve", resolver({"metadata.internal": ["169.254.169.254"]}))
    with pytest.raises(UserError, match="metadata.internal resolves to 169.254.169.254"):
        build_rule(**base, webhook_url="http://metadata.internal/")
    allow_hosts("metadata.internal")
    assert build_rule(**base, webhook_url="http://metadata.internal/").webhook_url


def test_send_time_check_catches_a_name_that_now_resolves_inside(
    org, webhook, allow_hosts, monkeypatch
):
    """DNS that answered a public address when the rule was saved and a loopback one later
    (rebinding): nothing is sent, and the delivery log says why."""
    engine, org_id, project = org
    port = webhook.url.split(":")[2].split("/")[0]
    url = f"http://hooks.example.com:{port}/hook"
    monkeypatch.setattr(egress, "resolve", resolver({"hooks.example.com": ["93.184.216.34"]}))
    rule_id = firing_rule(engine, org_id, project, url)
    evaluate(engine, NOW)
    monkeypatch.setattr(egress, "resolve", resolver({"hooks.example.com": ["127.0.0.1"]}))
    assert deliver_due(engine, NOW) == 1
    (logged,) = delivery_log(engine, admin_scope(org_id), rule_id)
    assert (logged["status"], logged["attempts"]) == ("failed", 1)  # final: not retried
    assert "hooks.example.com resolves to 127.0.0.1, a loopback address" in logged["last_error"]
    assert webhook.bodies == []


def test_the_request_goes_to_the_checked_address_with_the_host_name_kept(
    org, webhook, allow_hosts, monkeypatch
):
    engine, org_id, project = org
    allow_hosts("127.0.0.1")
    port = webhook.url.split(":")[2].split("/")[0]
    calls: list[str] = []
    monkeypatch.setattr(
        egress, "resolve", resolver({"hooks.example.com": ["127.0.0.1"]}, calls=calls)
    )
    rule_id = firing_rule(engine, org_id, project, f"http://hooks.example.com:{port}/hook")
    evaluate(engine, NOW)
    calls.clear()
    deliver_due(engine, NOW)
    assert delivery_log(engine, admin_scope(org_id), rule_id)[0]["status"] == "delivered"
    assert calls == ["hooks.example.com"]  # resolved once, by the check; connected to its answer
    assert webhook.hosts == [f"hooks.example.com:{port}"]
    assert len(webhook.bodies) == 1


@pytest.mark.parametrize(
    "location",
    ["http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/", "/elsewhere-on-the-same-host"],
)
@pytest.mark.parametrize("status", [302, 307])
def test_redirects_are_not_followed(org, webhook, loopback_allowed, location, status):
    engine, org_id, project = org
    rule_id = firing_rule(engine, org_id, project, webhook.url)
    evaluate(engine, NOW)
    webhook.statuses, webhook.location = [status], location
    deliver_due(engine, NOW)
    (logged,) = delivery_log(engine, admin_scope(org_id), rule_id)
    assert (logged["status"], logged["attempts"]) == ("failed", 1)
    assert f"HTTP {status}, a redirect to {location}" in logged["last_error"]
    assert "redirects are not followed" in logged["last_error"]
    assert len(webhook.bodies) == 1  # the one POST; nothing went to the redirect target


@pytest.fixture
def tls_receiver(tmp_path):
    """An HTTPS receiver on 127.0.0.1 with a self-signed certificate for hooks.example.com;
    it records the TLS server name (SNI) and Host header each client sent."""
    import datetime as dt
    import json
    import ssl
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hooks.example.com")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("hooks.example.com")]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    seen = {"sni": [], "hosts": [], "bodies": []}
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    context.sni_callback = lambda sock, server_name, ctx: seen["sni"].append(server_name)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - the http.server API
            seen["hosts"].append(self.headers["host"])
            seen["bodies"].append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    # polled every 20 ms: shutdown() waits for one poll, 0.5 s per test at the default
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    seen["port"], seen["ca"] = server.server_address[1], cert_file
    yield seen
    server.shutdown()


def test_https_keeps_the_host_name_for_tls_while_connecting_to_the_checked_address(
    org, tls_receiver, allow_hosts, monkeypatch
):
    import ssl

    engine, org_id, project = org
    allow_hosts("127.0.0.1")
    monkeypatch.setattr(egress, "resolve", resolver({"hooks.example.com": ["127.0.0.1"]}))
    port = tls_receiver["port"]
    rule_id = firing_rule(engine, org_id, project, f"https://hooks.example.com:{port}/hook")
    evaluate(engine, NOW)

    deliver_due(engine, NOW)  # the certificate is not trusted: verification is on
    (logged,) = delivery_log(engine, admin_scope(org_id), rule_id)
    assert logged["status"] == "pending" and "CERTIFICATE_VERIFY_FAILED" in logged["last_error"]

    trusted = ssl.create_default_context(cafile=str(tls_receiver["ca"]))
    monkeypatch.setattr(ssl, "_create_default_https_context", lambda *a, **k: trusted)
    deliver_due(engine, NOW + timedelta(seconds=5))
    assert delivery_log(engine, admin_scope(org_id), rule_id)[0]["status"] == "delivered"
    assert tls_receiver["sni"] == ["hooks.example.com", "hooks.example.com"]
    assert tls_receiver["hosts"] == [f"hooks.example.com:{port}"]
    assert len(tls_receiver["bodies"]) == 1
