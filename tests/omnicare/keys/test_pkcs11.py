"""The PKCS#11 backend against a real SoftHSM2 token (Debian package softhsm2)."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from omnicare.keys import backends, services
from omnicare.keys.models import KeyVersion

pytestmark = pytest.mark.django_db

SOFTHSM_LIB = Path(backends.DEFAULT_PKCS11_LIB)


@pytest.fixture
def softhsm_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: Any) -> Iterator[str]:
    """A throwaway token under its own SOFTHSM2_CONF / tokendir; the key backend switched to pkcs11."""
    # CI sets OMNICARE_REQUIRE_SOFTHSM=1 so a missing HSM is a failure there, not a silent skip.
    missing = pytest.fail if os.environ.get("OMNICARE_REQUIRE_SOFTHSM") else pytest.skip
    try:
        import pkcs11  # noqa: F401
    except ImportError:
        missing("python-pkcs11 is not installed (pip install python-pkcs11)")
    util = shutil.which("softhsm2-util")
    if util is None or not SOFTHSM_LIB.exists():
        missing("SoftHSM2 is not installed (apt-get install -y softhsm2)")
    assert util is not None
    tokendir = tmp_path / "tokens"
    tokendir.mkdir()
    conf = tmp_path / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokendir}\nobjectstore.backend = file\nlog.level = ERROR\n")
    monkeypatch.setenv("SOFTHSM2_CONF", str(conf))
    subprocess.run(
        [util, "--init-token", "--free", "--label", "omnicare-test", "--so-pin", "12345678", "--pin", "87654321"],
        check=True, capture_output=True,
    )
    monkeypatch.setenv("OMNICARE_PKCS11_TOKEN", "omnicare-test")
    monkeypatch.setenv("OMNICARE_PKCS11_PIN", "87654321")
    monkeypatch.setenv("OMNICARE_MASTER_KEY", base64.b64encode(b"\x07" * 32).decode())
    settings.OMNICARE_KEY_BACKEND = "pkcs11"
    backends.reset_backends()
    yield "omnicare-test"
    backends.reset_backends()


def _token_labels() -> set[str]:
    import pkcs11
    from pkcs11 import Attribute

    backend = backends.backend_for("pkcs11")
    assert isinstance(backend, backends.Pkcs11Backend)
    token = pkcs11.lib(backend.lib_path).get_token(token_label=backend.token_label)
    with token.open(user_pin=backend.pin) as session:
        return {obj[Attribute.LABEL] for obj in session.get_objects()}


def test_signing_key_lives_on_the_token_and_signatures_verify(softhsm_token: str) -> None:
    key_id, sig = services.sign(data=b"checkpoint")
    row = KeyVersion.objects.get(purpose="audit-signing")
    assert row.backend == "pkcs11" and row.handle in _token_labels()
    assert len(sig) == 64 and services.verify(key_id=key_id, data=b"checkpoint", signature=sig)
    assert not services.verify(key_id=key_id, data=b"checkpoinT", signature=sig)
    # The audit verifier's key comes from the token itself, not from the public_key column.
    assert services.verify_pinned(key_id=key_id, data=b"checkpoint", signature=sig)
    assert services.trusted_public_key(key_id=key_id) == bytes(row.public_key)


def test_wrapping_on_the_token_and_rotation_destroys_the_old_key(softhsm_token: str) -> None:
    services.secret_put(name="blind-index", value=b"k" * 32)
    old = KeyVersion.objects.get(purpose="kek")
    assert old.backend == "pkcs11" and old.handle in _token_labels()
    assert services.secret_get(name="blind-index") == b"k" * 32

    services.rotate(purpose="kek")
    assert services.rotate_due()["rewrapped"] == 1
    old.refresh_from_db()
    assert old.status == KeyVersion.RETIRED
    assert not any(label.startswith("omnicare:kek:v1:") for label in _token_labels())
    assert services.secret_get(name="blind-index") == b"k" * 32


def test_local_keys_keep_working_after_switching_to_the_hsm(softhsm_token: str, settings: Any) -> None:
    settings.OMNICARE_KEY_BACKEND = "local"
    key_id, sig = services.sign(data=b"made locally")
    settings.OMNICARE_KEY_BACKEND = "pkcs11"
    new = services.rotate(purpose="audit-signing")
    assert new.backend == "pkcs11"
    assert services.verify(key_id=key_id, data=b"made locally", signature=sig)
