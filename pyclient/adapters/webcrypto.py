"""Pyodide crypto adapter: runs the core's plans with WebCrypto (async, batched).

WebCrypto is async and each JS<->Python crossing costs ~0.2 ms, far more than
AES-GCM on a 2 KB record. So a batch crosses once: Python packs every nonce,
AAD and plaintext into ONE Uint8Array plus an offsets table, a small JS helper
starts all ``crypto.subtle.encrypt``/``decrypt`` calls, awaits ``Promise.all``
and hands back ONE Uint8Array plus lengths (-1 = tag failure, so one bad record
never fails the whole batch).

Data keys are imported as non-extractable AES-GCM ``CryptoKey`` objects; the
raw bytes of an unlocked keyring still live in Python memory because the
blind-index HMACs run in Python.

Only importable inside Pyodide (``js``, ``pyodide``).
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import js  # type: ignore[import-not-found]
from pyodide.code import run_js  # type: ignore[import-not-found]
from pyodide.ffi import to_js  # type: ignore[import-not-found]

from pyclient import envelope, keys
from pyclient.compress import Codec, default_codec
from pyclient.envelope import AuthenticationFailed, EnvelopeError, RecordRef, SealJob
from pyclient.keys import KdfParams, Keyring, KeyState, NonceLease, StaleKeyState

_MAX_CAS_RETRIES = 8

_HELPER_JS = r"""
(() => {
  const subtle = globalThis.crypto.subtle;
  // meta: Uint32Array, 7 per job: key index, iv off, iv len, aad off, aad len, data off, data len
  async function gcmBatch(decrypt, keys, buf, meta) {
    const n = meta.length / 7;
    const jobs = new Array(n);
    for (let i = 0; i < n; i++) {
      const m = i * 7;
      const params = {
        name: "AES-GCM",
        iv: buf.subarray(meta[m + 1], meta[m + 1] + meta[m + 2]),
        additionalData: buf.subarray(meta[m + 3], meta[m + 3] + meta[m + 4]),
        tagLength: 128,
      };
      const data = buf.subarray(meta[m + 5], meta[m + 5] + meta[m + 6]);
      const p = decrypt ? subtle.decrypt(params, keys[meta[m]], data) : subtle.encrypt(params, keys[meta[m]], data);
      jobs[i] = p.then((r) => new Uint8Array(r), () => null);
    }
    const outs = await Promise.all(jobs);
    let total = 0;
    for (const o of outs) if (o !== null) total += o.length;
    const out = new Uint8Array(total);
    const lens = new Int32Array(n);
    let off = 0;
    for (let i = 0; i < n; i++) {
      const o = outs[i];
      if (o === null) { lens[i] = -1; continue; }
      out.set(o, off);
      off += o.length;
      lens[i] = o.length;
    }
    return [out, new Uint8Array(lens.buffer)];
  }
  function importGcm(raw) {
    return subtle.importKey("raw", raw, { name: "AES-GCM" }, false, ["encrypt", "decrypt"]);
  }
  async function pbkdf2(password, salt, iterations) {
    const base = await subtle.importKey("raw", password, "PBKDF2", false, ["deriveBits"]);
    const bits = await subtle.deriveBits({ name: "PBKDF2", hash: "SHA-256", salt, iterations }, base, 256);
    return new Uint8Array(bits);
  }
  return { gcmBatch, importGcm, pbkdf2 };
})()
"""

_helper: Any = None


def _js() -> Any:
    global _helper
    if _helper is None:
        _helper = run_js(_HELPER_JS)
    return _helper


def _u8(data: bytes | bytearray) -> Any:
    arr = js.Uint8Array.new(len(data))
    if data:
        arr.assign(data)
    return arr


def random_bytes(n: int) -> bytes:
    """``crypto.getRandomValues`` (CSPRNG)."""
    arr = js.Uint8Array.new(n)
    js.crypto.getRandomValues(arr)
    return bytes(arr.to_bytes())


async def import_gcm_key(raw: bytes) -> Any:
    """Non-extractable AES-256-GCM CryptoKey."""
    return await _js().importGcm(_u8(raw))


async def gcm_batch(
    decrypt: bool, crypto_keys: Sequence[Any], jobs: Sequence[tuple[int, bytes, bytes, bytes]]
) -> list[bytes | None]:
    """Run many AES-GCM operations in ONE JS call. Job = (key index, nonce, aad, data).

    Returns ciphertext||tag (encrypt) or plaintext (decrypt) per job, None on tag failure.
    """
    if not jobs:
        return []
    buf = bytearray()
    meta: list[int] = []
    for key_index, nonce, aad, data in jobs:
        meta.append(key_index)
        for part in (nonce, aad, data):
            meta += (len(buf), len(part))
            buf += part
    meta_bytes = struct.pack(f"<{len(meta)}I", *meta)
    meta_arr = js.Uint32Array.new(_u8(meta_bytes).buffer)
    res = await _js().gcmBatch(decrypt, to_js(list(crypto_keys)), _u8(buf), meta_arr)
    out_bytes = bytes(res[0].to_bytes())
    lens = struct.unpack(f"<{len(jobs)}i", bytes(res[1].to_bytes()))
    outs: list[bytes | None] = []
    off = 0
    for n in lens:
        if n < 0:
            outs.append(None)
        else:
            outs.append(out_bytes[off : off + n])
            off += n
    return outs


async def derive_kek(pin: str, params: KdfParams) -> bytes:
    """PBKDF2-HMAC-SHA256 via ``crypto.subtle.deriveBits``."""
    raw = await _js().pbkdf2(_u8(keys.pin_bytes(pin)), _u8(params.salt), params.iterations)
    return bytes(raw.to_bytes())


async def wrap_keyring(
    *,
    pin: str,
    keyring: Keyring,
    salt: bytes,
    nonces: Sequence[bytes],
    iterations: int = keys.MIN_PBKDF2_ITERATIONS,
) -> bytes:
    """PIN-wrapped keyring blob (same bytes as the CPython adapter for the same inputs)."""
    params = KdfParams(salt=salt, iterations=iterations)
    kek = await import_gcm_key(await derive_kek(pin, params))
    jobs = keys.wrap_plan(params, keyring, list(nonces))
    cts = await gcm_batch(False, [kek], [(0, j.nonce, j.aad, j.plaintext) for j in jobs])
    return keys.pack_keyring(params, jobs, [c for c in cts if c is not None])


async def wrap_keyring_random(
    *, pin: str, keyring: Keyring, iterations: int = keys.MIN_PBKDF2_ITERATIONS
) -> bytes:
    """:func:`wrap_keyring` with fresh random salt and nonces."""
    nonces = [random_bytes(envelope.NONCE_LEN) for _ in keyring.entries]
    return await wrap_keyring(
        pin=pin, keyring=keyring, salt=random_bytes(16), nonces=nonces, iterations=iterations
    )


async def unlock_keyring(*, pin: str, blob: bytes) -> Keyring:
    """Unwrap a keyring blob; raises :class:`pyclient.keys.WrongPin` for a wrong PIN."""
    parsed = keys.parse_keyring(blob)
    kek = await import_gcm_key(await derive_kek(pin, parsed.params))
    plains = await gcm_batch(True, [kek], [(0, w.nonce, w.aad, w.ciphertext) for w in parsed.entries])
    return keys.keyring_from_unwrapped(parsed, plains)


def new_data_key(*, key_id: str) -> tuple[bytes, KeyState]:
    """Random 256-bit data key and its fresh counter state."""
    return random_bytes(envelope.KEY_LEN), KeyState(
        key_id=key_id, nonce_prefix=random_bytes(keys.NONCE_PREFIX_LEN)
    )


class WebCrypto:
    """Seal/open FHIR records in Pyodide: canonical JSON -> dictionary zlib -> AES-256-GCM.

    Create with ``await WebCrypto.create(...)``. ``persist_state(expected, new)``
    is awaited before any nonce of a new block is used; it must store ``new``
    only if the stored state equals ``expected`` (one IndexedDB readwrite
    transaction running :func:`pyclient.keys.compare_and_swap`), else raise
    :class:`pyclient.keys.StaleKeyState`.
    """

    def __init__(
        self,
        *,
        keyring: Keyring,
        crypto_keys: dict[str, Any],
        state: KeyState,
        persist_state: Callable[[KeyState, KeyState], Awaitable[None]],
        codec: Codec,
        block_size: int,
    ) -> None:
        self.keyring = keyring
        self._keys = crypto_keys
        self._lease = NonceLease(state, block_size)
        self._persist = persist_state
        self._codec = codec
        self._subkeys: dict[tuple[str, bytes | None], Any] = {}

    @classmethod
    async def create(
        cls,
        *,
        keyring: Keyring,
        state: KeyState,
        persist_state: Callable[[KeyState, KeyState], Awaitable[None]],
        codec: Codec | None = None,
        block_size: int = keys.DEFAULT_BLOCK,
    ) -> WebCrypto:
        """Import every data key of the keyring as a non-extractable CryptoKey."""
        if state.key_id != keyring.active_data.key_id:
            raise ValueError("key state belongs to another key than the active data key")
        imported = {kid: await import_gcm_key(keyring.data_key(kid)) for kid in keyring.data_key_ids()}
        return cls(
            keyring=keyring,
            crypto_keys=imported,
            state=state,
            persist_state=persist_state,
            codec=codec or default_codec(),
            block_size=block_size,
        )

    @property
    def key_state(self) -> KeyState:
        """Counter state as last persisted."""
        return self._lease.state

    async def _nonces(self, n: int) -> list[bytes]:
        for _ in range(_MAX_CAS_RETRIES):
            pending = self._lease.prepare(n)
            if pending is None:
                break
            try:
                await self._persist(self._lease.state, pending[0])
            except StaleKeyState as exc:  # another tab reserved first: continue after its block
                self._lease.adopt(exc.current)
                continue
            self._lease.install(*pending, salt=random_bytes(envelope.SALT_LEN))
            break
        else:
            raise RuntimeError("could not reserve nonces: the stored key state keeps changing")
        return self._lease.take(n)

    async def _import_subkeys(self, wanted: Sequence[tuple[str, bytes | None]]) -> None:
        """Import the v2 block keys (HKDF of a data key and a block salt) not imported yet."""
        for key_id, salt in dict.fromkeys(wanted):
            if salt is None or (key_id, salt) in self._subkeys:
                continue
            raw = envelope.subkey(self.keyring.data_key(key_id), salt)  # raises UnknownKeyId
            self._subkeys[(key_id, salt)] = await import_gcm_key(raw)

    def _key_slot(
        self, key_id: str, order: list[Any], index: dict[Any, int], salt: bytes | None = None
    ) -> int:
        slot_key = (key_id, salt)
        if slot_key not in index:
            if key_id not in self._keys:
                raise envelope.UnknownKeyId(f"no data key {key_id!r} in the keyring")
            index[slot_key] = len(order)
            order.append(self._keys[key_id] if salt is None else self._subkeys[slot_key])
        return index[slot_key]

    async def seal_jobs(self, jobs: Sequence[SealJob]) -> list[bytes]:
        """Envelopes for already-planned jobs, one JS call."""
        order: list[Any] = []
        index: dict[Any, int] = {}
        await self._import_subkeys([(j.key_id, j.salt) for j in jobs])
        slots = [self._key_slot(j.key_id, order, index, j.salt) for j in jobs]
        cts = await gcm_batch(
            False, order, [(s, j.nonce, j.aad, j.plaintext) for s, j in zip(slots, jobs, strict=True)]
        )
        out = []
        for job, ct in zip(jobs, cts, strict=True):
            if ct is None:  # encryption does not fail in practice; never store a half batch
                raise EnvelopeError("WebCrypto encryption failed")
            out.append(envelope.pack(job, ct))
        return out

    async def seal_records(self, resources: Sequence[Mapping[str, Any]]) -> list[bytes]:
        """One envelope per FHIR resource dict; one JS call for the whole batch."""
        if not resources:
            return []
        refs = [RecordRef.of(r) for r in resources]
        nonces = await self._nonces(len(resources))
        kid = self.keyring.active_data.key_id
        jobs = [
            envelope.seal_plan(
                key_id=kid,
                nonce=nonce,
                resource_type=ref.resource_type,
                resource_id=ref.resource_id,
                version=ref.version,
                plaintext=self._codec.encode_record(res),
                salt=self._lease.salt,
            )
            for ref, res, nonce in zip(refs, resources, nonces, strict=True)
        ]
        return await self.seal_jobs(jobs)

    async def open_blobs(self, items: Sequence[tuple[RecordRef, bytes]]) -> list[bytes | EnvelopeError]:
        """Plaintexts (compressed records) or the error per envelope; one JS call."""
        results: list[bytes | EnvelopeError | None] = [None] * len(items)
        order: list[Any] = []
        index: dict[Any, int] = {}
        jobs: list[tuple[int, bytes, bytes, bytes]] = []
        positions: list[int] = []
        for i, (ref, blob) in enumerate(items):
            try:
                parsed = envelope.parse(blob)
                if parsed.salt is not None:
                    await self._import_subkeys([(parsed.key_id, parsed.salt)])
                slot = self._key_slot(parsed.key_id, order, index, parsed.salt)
                jobs.append((slot, parsed.nonce, parsed.aad_for(ref), parsed.ciphertext))
                positions.append(i)
            except EnvelopeError as exc:
                results[i] = exc
        for i, plain in zip(positions, await gcm_batch(True, order, jobs), strict=True):
            ref = items[i][0]
            results[i] = (
                plain
                if plain is not None
                else AuthenticationFailed(
                    f"{ref.resource_type}/{ref.resource_id} v{ref.version}: authentication failed"
                )
            )
        return [r if r is not None else EnvelopeError("internal: missing result") for r in results]

    async def try_open_records(
        self, items: Sequence[tuple[RecordRef, bytes]]
    ) -> list[dict[str, Any] | EnvelopeError]:
        """Open each envelope as the record it is stored under; failures are returned, not raised."""
        out: list[dict[str, Any] | EnvelopeError] = []
        for res in await self.open_blobs(items):
            if isinstance(res, EnvelopeError):
                out.append(res)
                continue
            try:
                out.append(self._codec.decode_record(res))
            except ValueError as exc:
                out.append(EnvelopeError(f"sealed record does not decompress: {exc}"))
        return out

    async def open_records(self, items: Sequence[tuple[RecordRef, bytes]]) -> list[dict[str, Any]]:
        """Like :meth:`try_open_records` but raises the first failure."""
        out = []
        for res in await self.try_open_records(items):
            if isinstance(res, EnvelopeError):
                raise res
            out.append(res)
        return out
