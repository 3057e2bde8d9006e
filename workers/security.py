"""Security settings the two Kafka clients do not share.

The hasher's confluent-kafka takes `Settings.kafka_config` (librdkafka properties) verbatim; the
matcher's faust/aiokafka does not read librdkafka properties at all. Rather than a second,
faust-only configuration that could drift, the same properties are translated here, and any
security property that cannot be translated is an error: a matcher that silently fell back to
PLAINTEXT, or to no client certificate, would be worse than one that does not start.

Redis needs nothing here: redis-py takes user, password, TLS and CA/cert/key files in the URL
(`rediss://user:pass@host:6380/0?ssl_ca_certs=/path/ca.pem`), see docs/security.md.
"""
from __future__ import annotations

import ssl
from typing import Any, Mapping

import faust

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
SSL_KEYS = ("ssl.ca.location", "ssl.certificate.location", "ssl.key.location", "ssl.key.password",
            "ssl.endpoint.identification.algorithm")
SASL_KEYS = ("sasl.mechanism", "sasl.mechanisms", "sasl.username", "sasl.password")
# Properties with a security meaning this module does not translate: naming them is an error.
_SECURITY_PREFIXES = ("ssl.", "sasl.", "enable.ssl.", "enable.sasl.")


def faust_broker_options(kafka_config: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments for faust.App equivalent to the librdkafka security properties in
    `kafka_config` ({} for PLAINTEXT). Raises ValueError for any it cannot map (OAUTHBEARER,
    GSSAPI, keystores, PEM strings...), and for credentials given under a protocol that would not
    use them (a config that says who to be but not to authenticate is a mistake, not a default)."""
    conf = {k: str(v) for k, v in kafka_config.items()}
    protocol = conf.get("security.protocol", "PLAINTEXT").upper()
    if protocol not in PROTOCOLS:
        raise ValueError(f"security.protocol {conf['security.protocol']!r} is not one of {', '.join(PROTOCOLS)}")
    unknown = sorted(k for k in conf if k.startswith(_SECURITY_PREFIXES) and k not in SSL_KEYS + SASL_KEYS)
    if unknown:
        raise ValueError(f"the matcher (faust/aiokafka) cannot use {', '.join(unknown)}; supported: "
                         f"security.protocol, {', '.join(SASL_KEYS + SSL_KEYS)}")
    uses_ssl, uses_sasl = protocol.endswith("SSL"), protocol.startswith("SASL")
    stray = [k for k in conf if (k in SSL_KEYS and not uses_ssl) or (k in SASL_KEYS and not uses_sasl)]
    if stray:
        raise ValueError(f"{', '.join(sorted(stray))} set but security.protocol is {protocol}")
    context = ssl_context(conf) if uses_ssl else None
    if not uses_sasl:
        return {"broker_credentials": faust.SSLCredentials(context)} if context is not None else {}
    mechanism = _mechanism(conf)
    missing = [k for k in ("sasl.username", "sasl.password") if not conf.get(k)]
    if missing:
        raise ValueError(f"SASL {mechanism} needs {' and '.join(missing)}")
    return {"broker_credentials": faust.SASLCredentials(
        username=conf["sasl.username"], password=conf["sasl.password"], mechanism=mechanism,
        ssl_context=context)}


def _mechanism(conf: dict[str, str]) -> str:
    names = {conf[k] for k in ("sasl.mechanism", "sasl.mechanisms") if k in conf}
    if len(names) > 1:
        raise ValueError(f"sasl.mechanism and sasl.mechanisms disagree: {sorted(names)}")
    # librdkafka's default mechanism is GSSAPI, which aiokafka here cannot do: say so.
    mechanism = (names.pop() if names else "GSSAPI").upper()
    if mechanism not in MECHANISMS:
        raise ValueError(f"SASL mechanism {mechanism} is not supported by the matcher (faust/aiokafka); "
                         f"use one of {', '.join(MECHANISMS)}")
    return mechanism


def ssl_context(conf: Mapping[str, str]) -> ssl.SSLContext:
    """A client SSLContext from librdkafka's file properties: the CA (system store when absent),
    an optional client certificate and key, hostname checks unless the algorithm is 'none'.
    Built at startup so a missing or unreadable file fails the matcher at once."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=conf.get("ssl.ca.location") or None)
    algorithm = conf.get("ssl.endpoint.identification.algorithm", "https").lower()
    if algorithm not in ("https", "none"):
        raise ValueError(f"ssl.endpoint.identification.algorithm must be https or none, not {algorithm!r}")
    context.check_hostname = algorithm == "https"  # the certificate is still verified either way
    cert, key = conf.get("ssl.certificate.location"), conf.get("ssl.key.location")
    if key and not cert:
        raise ValueError("ssl.key.location set without ssl.certificate.location")
    if cert:
        context.load_cert_chain(cert, key or None, conf.get("ssl.key.password") or None)
    elif conf.get("ssl.key.password"):
        raise ValueError("ssl.key.password set without ssl.certificate.location")
    return context
