"""``poold tls init``: a CA and a server certificate that Python's own TLS client accepts for the
names given, keys readable by their owner only, and a renewal that keeps the CA."""

from __future__ import annotations

import ssl

import pytest
from cryptography import x509

from poold import tls


def test_the_certificate_verifies_against_the_ca_for_its_names_and_keys_are_private(tmp_path):
    made = tls.init(tmp_path, ["pool.example.org", "10.0.0.5"], days=30)
    assert made.ca_made
    for name in (tls.CA_KEY, tls.SERVER_KEY):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o600
    cert = x509.load_pem_x509_certificate(made.cert.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["pool.example.org"]
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]
    assert 29 <= (cert.not_valid_after_utc - cert.not_valid_before_utc).days <= 30
    handshake(made, "pool.example.org")
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        handshake(made, "other.example.org")


def handshake(made: tls.Made, host: str) -> None:
    """A TLS handshake in memory: the client verifies as the CLI and the agents do (``poold_common.https``)."""
    from poold_common.https import client_context

    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(made.cert, made.key)
    pipes = [ssl.MemoryBIO() for _ in range(4)]  # client in/out, server in/out
    client = client_context(made.ca_cert).wrap_bio(pipes[0], pipes[1], server_hostname=host)
    server = server_context.wrap_bio(pipes[2], pipes[3], server_side=True)
    done = {client: False, server: False}
    for _ in range(10):
        for side in (client, server):
            if not done[side]:
                try:
                    side.do_handshake()
                    done[side] = True
                except ssl.SSLWantReadError:
                    pass
        pipes[2].write(pipes[1].read())
        pipes[0].write(pipes[3].read())
        if all(done.values()):
            return
    raise AssertionError("no handshake")


def test_running_it_again_renews_the_server_certificate_and_keeps_the_ca(tmp_path):
    first = tls.init(tmp_path, ["pool.example.org"])
    ca, old = first.ca_cert.read_bytes(), first.cert.read_bytes()
    again = tls.init(tmp_path, ["pool.example.org", "pool2.example.org"])
    assert not again.ca_made and again.ca_cert.read_bytes() == ca and again.cert.read_bytes() != old
    issuer = x509.load_pem_x509_certificate(ca)
    x509.load_pem_x509_certificate(again.cert.read_bytes()).verify_directly_issued_by(issuer)


@pytest.mark.parametrize(("hosts", "days", "message"), [([], 365, "at least one host"), (["a"], 0, "between 1 and")])
def test_what_cannot_be_made_is_refused_saying_why(tmp_path, hosts, days, message):
    with pytest.raises(tls.TlsError, match=message):
        tls.init(tmp_path, hosts, days)


def test_a_ca_key_without_its_certificate_is_not_overwritten(tmp_path):
    (tmp_path / tls.CA_KEY).write_text("precious")
    with pytest.raises(tls.TlsError, match="exists without ca.pem"):
        tls.init(tmp_path, ["a"])
    assert (tmp_path / tls.CA_KEY).read_text() == "precious"
