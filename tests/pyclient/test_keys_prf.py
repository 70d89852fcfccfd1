"""Hardware-bound unlock and the unlock-secret rule (issue 10, item 16): pure parts in pyclient.keys."""

from __future__ import annotations

import pytest

from pyclient import keys as kh


def test_the_prf_kek_is_hkdf_sha256_of_the_authenticator_output() -> None:
    hkdf = pytest.importorskip("cryptography.hazmat.primitives.kdf.hkdf")
    hashes = pytest.importorskip("cryptography.hazmat.primitives.hashes")
    out, salt = bytes(range(32)), bytes(range(100, 132))
    want = hkdf.HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=kh.PRF_INFO).derive(out)
    assert kh.prf_kek(out, salt) == want
    assert kh.prf_kek(out, bytes(32)) != want  # a new salt (re-enrolment) gives a new key


def test_the_hardware_wrapped_container_round_trips_and_refuses_garbage() -> None:
    cred, salt = b"\x01" * 16, b"\x02" * 32
    w = kh.PrfWrapped(cred, salt, b"\x03" * 12, b"\x04" * 80)
    assert w.aad() == kh.prf_aad(cred, salt)
    blob = w.pack()
    assert kh.is_prf_wrapped(blob) and kh.parse_prf_wrapped(blob) == w
    assert not kh.is_prf_wrapped(b"OK\x01\x01")  # a PIN-only keyring
    for bad in (b"OKP1", b"OKP1\x10" + b"\x01" * 16, b"OKP1\x00" + b"\x00" * 80):
        with pytest.raises(kh.MalformedKeyring):
            kh.parse_prf_wrapped(bad)


@pytest.mark.parametrize(("secret", "scope", "hardware", "ok"), [
    ("123456", "care-team", False, True),
    ("12345", "care-team", False, False),
    ("123456", "all", False, False),  # front desk / auditor: every patient, no hardware binding
    ("1234567890123", "all", False, False),  # long but digits only
    ("aaaaaaaaaaaaa", "all", False, False),
    ("blue tractor 29", "all", False, True),
    ("123456", "all", True, True),  # hardware-bound: the PIN only guards the device's own attempt limit
])
def test_wide_scope_roles_need_a_passphrase_without_hardware_binding(secret: str, scope: str, hardware: bool,
                                                                     ok: bool) -> None:
    problem = kh.unlock_secret_problem(secret, scope=scope, hardware_bound=hardware)
    assert (problem is None) == ok, problem
    if not ok and scope == "all" and not hardware:
        assert "passphrase" in problem


@pytest.mark.parametrize(("secret", "ok"), [
    ("123456", True), ("12345", False), ("1234567890123", True), ("abcdefgh", True), ("abcdefg", False),
    ("x" * 64, True), ("x" * 65, False),
])
def test_the_pin_rule_is_one_check_with_the_forms_own_words(secret: str, ok: bool) -> None:
    # setup_pin enforces exactly this (no second pattern in the adapter) and the set-up form's hint is PIN_RULE.
    from pyclient.errors import ValidationFailed

    if ok:
        kh.unlock_secret_check(secret, scope="care-team", hardware_bound=False)
        return
    with pytest.raises(ValidationFailed) as exc:
        kh.unlock_secret_check(secret, scope="care-team", hardware_bound=False)
    if len(secret) <= kh.SECRET_MAX_CHARS:
        assert (str(exc.value), exc.value.fields) == (kh.PIN_TOO_WEAK, {"pin": kh.PIN_RULE})
    assert kh.PIN_RULE == "At least 6 digits, or a passphrase of 8+ characters."
