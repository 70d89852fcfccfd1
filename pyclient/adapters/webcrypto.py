"""The browser's one crypto path: pyclient's plans (envelope, keys) run with WebCrypto via ``pwa/app/crypto.js``.

The app (``browser_app``) and the Pyodide tests (``tests/pyclient/_pyodide_prelude.py``, which gets the same
``crypto.js`` from ``tests/pyodide/run_pytest.mjs``) both run this module. The JavaScript half is that file and
not ``run_js``, because the page's CSP allows no eval.

WebCrypto is async and each JS<->Python crossing costs ~0.2 ms, far more than AES-GCM on a 2 KB record, so
every batch crosses once. Data keys, block keys and the PIN's KEK are non-extractable ``CryptoKey`` objects;
the raw bytes of an unlocked keyring still live in Python memory because the blind-index HMACs and row MACs
run in Python. The nonce reservation and the keyring wrapping are :mod:`pyclient.keys`'s; only the
primitives and the IndexedDB compare-and-swap are here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from pyclient import envelope as env
from pyclient import keys as kh
from pyclient.envelope import AuthenticationFailed, EnvelopeError, RecordRef, SealJob
from pyclient.errors import AppError

from .indexeddb_store import js_to_py

_NONCE_LEN = 12  # AES-GCM's 96-bit nonce (every envelope and keyring nonce)
_TAG_LEN = 16
KEY_STATE_META = "keys.state."  # + key id: the KeyState JSON of that data key, next to the keyring blob


class JsCipher:
    """:class:`pyclient.keys.KeyringCipher` (and key import) over ``crypto.js``; ``js`` is that module."""

    def __init__(self, js_crypto: Any) -> None:
        from pyodide.ffi import to_js  # type: ignore[import-not-found]  # noqa: PLC0415 - browser only

        self.js = js_crypto
        self._to_js = to_js

    async def derive_kek(self, pin: bytes, params: kh.KdfParams) -> Any:
        return await self.js.deriveKek(self._to_js(pin), self._to_js(params.salt), params.iterations)

    async def import_key(self, raw: bytes) -> Any:
        return await self.js.importAesKey(self._to_js(raw))

    async def import_keys(self, into: Any, names: Sequence[str], raws: Sequence[bytes]) -> None:
        """Many raw keys into the JS Map ``into`` under ``names``, one crossing."""
        await self.js.importAesKeys(into, self._to_js(list(names)), self._to_js(list(raws)))

    async def gcm_seal(self, key: Any, jobs: Sequence[kh.GcmJob]) -> list[bytes]:
        """One buffer each way (``crypto.js`` encryptPacked): converting a page's 3,000 small byte strings to
        JS and 1,000 back cost more than the AES-GCM itself."""
        if not jobs:
            return []
        if any(len(n) != _NONCE_LEN for n, _a, _p in jobs):  # not an envelope nonce: the general path
            return [bytes(c) for c in js_to_py(await self.js.encryptBatch(key, self._to_js([list(j) for j in jobs])))]
        pt_lens = [len(p) for _n, _a, p in jobs]
        out = (await self.js.encryptPacked(
            key, self._to_js(b"".join(n for n, _a, _p in jobs)), self._to_js(b"".join(a for _n, a, _p in jobs)),
            self._to_js([len(a) for _n, a, _p in jobs]), self._to_js(b"".join(p for _n, _a, p in jobs)),
            self._to_js(pt_lens))).to_bytes()
        cts: list[bytes] = []
        at = 0
        for n in pt_lens:
            cts.append(out[at:at + n + _TAG_LEN])
            at += n + _TAG_LEN
        if at != len(out):
            raise AppError("WebCrypto returned a batch of the wrong size")
        return cts

    async def gcm_open(self, key: Any, jobs: Sequence[kh.GcmJob]) -> list[bytes | None]:
        return await self.open_named(key, [("", *j) for j in jobs])

    async def open_named(self, keys: Any, jobs: Sequence[tuple[str, bytes, bytes, bytes]]) -> list[bytes | None]:
        """Jobs (key name in the JS Map ``keys``, nonce, aad, ciphertext); None where the tag fails."""
        out = js_to_py(await self.js.decryptBatch(keys, self._to_js([list(j) for j in jobs])))
        return [None if p is None else bytes(p) for p in out]


class IdbKeyState:
    """``persist_state`` for :func:`pyclient.keys.lease_nonces`: one IndexedDB readwrite transaction
    (``idb.metaCas``) compares the exact stored JSON with the JSON this holder last read or wrote — strings,
    so the check runs inside the transaction without crossing back into Python."""

    def __init__(self, idb: Any, raw: str) -> None:
        self._idb = idb
        self._raw = raw

    async def __call__(self, expected: kh.KeyState, new: kh.KeyState) -> None:
        kh.compare_and_swap(expected, expected=expected, new=new)  # new must advance the same key
        new_raw = json.dumps(new.to_dict())
        res = js_to_py(await self._idb.metaCas(KEY_STATE_META + new.key_id, self._raw, new_raw))
        swapped, stored_raw = bool(res[0]), res[1]
        if swapped:
            self._raw = new_raw
            return
        stored = None if stored_raw is None else kh.KeyState.from_dict(json.loads(str(stored_raw)))
        try:
            kh.compare_and_swap(stored, expected=expected, new=new)
        except kh.StaleKeyState:
            self._raw = str(stored_raw)
            raise
        # Same state, different spelling of the JSON: retry against the exact stored text.
        self._raw = str(stored_raw)
        raise kh.StaleKeyState(expected)


def _key_name(key_id: str, salt: bytes | None) -> str:
    return key_id if salt is None else f"{key_id}/{salt.hex()}"


class WebCrypto:
    """One unlocked keyring: seals under the active data key (envelope v2), opens v1 and v2 under any of its
    data keys. Create with ``await WebCrypto.create(...)``."""

    def __init__(self, cipher: JsCipher, keyring: kh.Keyring, aes: Any, lease: kh.NonceLease,
                 persist: kh.PersistState) -> None:
        self.cipher = cipher
        self.keyring = keyring
        self._aes = aes  # JS Map key name -> CryptoKey: data keys by id, v2 block keys by "id/salt"
        self._names: set[str] = set()
        self._lease = lease
        self._persist = persist
        self._lock: Any = None  # asyncio.Lock, made on first use inside the running loop

    @classmethod
    async def create(cls, cipher: JsCipher, *, keyring: kh.Keyring, state: kh.KeyState,
                     persist_state: kh.PersistState, block_size: int = kh.DEFAULT_BLOCK) -> WebCrypto:
        if state.key_id != keyring.active_data.key_id:
            raise ValueError("key state belongs to another key than the active data key")
        import js  # type: ignore[import-not-found]  # noqa: PLC0415 - browser only

        session = cls(cipher, keyring, js.Map.new(), kh.NonceLease(state, block_size), persist_state)
        await session._import([(kid, None) for kid in keyring.data_key_ids()])
        return session

    @property
    def key_state(self) -> kh.KeyState:
        """Counter state as last persisted."""
        return self._lease.state

    async def _import(self, wanted: Sequence[tuple[str, bytes | None]]) -> None:
        """Import the data keys and v2 block keys ``HKDF(data key, salt)`` not imported yet, one crossing.
        A key id the keyring lacks is skipped: what needs it fails as :class:`UnknownKeyId`."""
        names: list[str] = []
        raws: list[bytes] = []
        for kid, salt in wanted:
            name = _key_name(kid, salt)
            if name in self._names or name in names:
                continue
            try:
                raws.append(env.subkey(self.keyring.data_key(kid), salt))
            except env.UnknownKeyId:
                continue
            names.append(name)
        if names:
            await self.cipher.import_keys(self._aes, names, raws)
            self._names.update(names)

    def nonce_block(self, size: int) -> int:
        """Reserve ``size`` nonces at a time from now on (returns the previous size). A first sync seals ~1,050
        records a page: with 1,024-nonce blocks that is two reservations a page, each a durable IndexedDB
        transaction on "meta" that queues behind the page being written; the unused rest of a block is dropped
        on lock (a few thousand of the key's 2**32)."""
        old, self._lease.block_size = self._lease.block_size, max(1, size)
        return old

    async def reserve(self, n: int) -> tuple[bytes | None, list[bytes]]:
        """``n`` nonces no other tab or worker will ever use under this key, and their block salt."""
        import asyncio  # noqa: PLC0415

        if self._lock is None:
            self._lock = asyncio.Lock()
        # One reservation at a time within this tab (background audit writes run concurrently with saves):
        # prepare -> compare-and-swap -> install -> take must not interleave, or one coroutine's adopt()
        # would discard (or step back over) another's freshly installed block.
        async with self._lock:
            try:
                # A fresh random salt per block (envelope v2): a counter replayed after the stored state was
                # rolled back never meets the same AES key again.
                return await kh.lease_nonces(self._lease, n, persist=self._persist,
                                             new_salt=lambda: os.urandom(env.SALT_LEN))
            except kh.NonceReservationFailed:
                raise AppError("Could not reserve encryption nonces: another tab keeps changing the key state. "
                               "Close other OmniCare tabs and try again.") from None

    async def seal(self, items: Sequence[tuple[str, str, int, bytes]]) -> list[bytes]:
        """Envelopes for (type, id, version, compressed plaintext), bound to exactly that record version."""
        if not items:
            return []
        salt, nonces = await self.reserve(len(items))
        return await self.seal_jobs(
            env.seal_plans(key_id=self.keyring.active_data.key_id, salt=salt, nonces=nonces, items=items))

    async def seal_jobs(self, jobs: Sequence[SealJob]) -> list[bytes]:
        """Envelopes for planned jobs (nonces chosen by :meth:`seal`, or fixed by the test vectors): one
        crossing per AES key, and a batch from :meth:`seal` has one."""
        await self._import([(j.key_id, j.salt) for j in jobs])
        by_key: dict[str, list[int]] = {}
        for i, job in enumerate(jobs):
            by_key.setdefault(_key_name(job.key_id, job.salt), []).append(i)
        out = [b""] * len(jobs)
        for name, idx in by_key.items():
            if name not in self._names:
                raise env.UnknownKeyId(f"no data key {jobs[idx[0]].key_id!r} in the keyring")
            cts = await self.cipher.gcm_seal(self._aes.get(name), [(jobs[i].nonce, jobs[i].aad, jobs[i].plaintext)
                                                                   for i in idx])
            for i, ct in zip(idx, cts, strict=True):
                out[i] = env.pack(jobs[i], ct)
        return out

    async def open_blobs(self, items: Sequence[tuple[RecordRef, bytes]]) -> list[bytes | EnvelopeError]:
        """Plaintext (compressed record) per envelope, or why it does not open; one crossing."""
        parsed: list[env.Parsed | EnvelopeError] = []
        for ref, blob in items:
            try:
                one = env.parse(blob)
                env.aad_for(header=b"", ref=ref)  # a ref that cannot be bound fails here, not in JS
                parsed.append(one)
            except EnvelopeError as exc:
                parsed.append(exc)
        await self._import([(p.key_id, p.salt) for p in parsed if isinstance(p, env.Parsed) and p.salt is not None])
        jobs: list[tuple[str, bytes, bytes, bytes]] = []
        for (ref, _blob), p in zip(items, parsed, strict=True):
            if isinstance(p, env.Parsed) and _key_name(p.key_id, p.salt) in self._names:
                jobs.append((_key_name(p.key_id, p.salt), p.nonce, p.aad_for(ref), p.ciphertext))
        plains = iter(await self.cipher.open_named(self._aes, jobs) if jobs else [])
        out: list[bytes | EnvelopeError] = []
        for (ref, _blob), p in zip(items, parsed, strict=True):
            if not isinstance(p, env.Parsed):
                out.append(p)
            elif _key_name(p.key_id, p.salt) not in self._names:
                out.append(env.UnknownKeyId(f"no data key {p.key_id!r} in the keyring"))
            else:
                plain = next(plains)
                out.append(plain if plain is not None else AuthenticationFailed(
                    f"{ref.resource_type}/{ref.resource_id} v{ref.version}: authentication failed"))
        return out
