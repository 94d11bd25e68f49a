"""Standard Webhooks signing, checked with the library's own verifier."""

from __future__ import annotations

import base64
import time

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from server.delivery.signing import headers, is_secret, new_secret, signature

BODY = b'{"type":"task.succeeded","timestamp":"2026-11-22T10:00:00Z","data":{"task_id":"t1"}}'


def test_a_new_secret_is_whsec_with_24_random_bytes():
    secret = new_secret()
    assert secret.startswith("whsec_") and is_secret(secret)
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 24
    assert new_secret() != secret
    assert not is_secret("whsec_!!") and not is_secret("sk_abc") and not is_secret("whsec_YQ==")


def test_the_headers_verify_with_standardwebhooks():
    secret = new_secret()
    sent = headers("evt_1", BODY, [secret], time.time())
    assert sent["webhook-id"] == "evt_1"
    assert sent["content-type"] == "application/json"
    assert sent["webhook-timestamp"].isdigit()
    assert Webhook(secret).verify(BODY, sent)["data"]["task_id"] == "t1"


def test_a_signature_does_not_verify_under_another_secret_or_another_body():
    secret = new_secret()
    sent = headers("evt_1", BODY, [secret], time.time())
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(BODY, sent)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY.replace(b"t1", b"t2"), sent)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY, {**sent, "webhook-id": "evt_2"})


def test_during_a_rotation_both_secrets_verify_the_same_request():
    old, new = new_secret(), new_secret()
    sent = headers("evt_1", BODY, [new, old], time.time())
    assert len(sent["webhook-signature"].split(" ")) == 2
    Webhook(old).verify(BODY, sent)
    Webhook(new).verify(BODY, sent)


def test_the_signature_is_hmac_sha256_of_id_timestamp_body_as_the_spec_says():
    import hashlib
    import hmac

    secret = new_secret()
    key = base64.b64decode(secret.removeprefix("whsec_"))
    expected = hmac.new(key, b"evt_9.1700000000." + BODY, hashlib.sha256).digest()
    assert signature("evt_9", 1_700_000_000, BODY, [secret]) == (
        "v1," + base64.b64encode(expected).decode()
    )


def test_signing_needs_a_secret():
    with pytest.raises(ValueError):
        signature("evt_1", 1, BODY, [])
