// WebCrypto in batches for Python (pyclient/adapters/browser_app.py). Python plans every seal/open
// (pyclient.envelope / pyclient.keys: header, AAD, nonce) and hands a whole batch to one call here:
// a WebCrypto call costs ~0.2 ms when crossed per record from Python but ~0.013 ms in JS.

const subtle = globalThis.crypto.subtle;

export function randomBytes(n) {
  return globalThis.crypto.getRandomValues(new Uint8Array(n));
}

/** PBKDF2-HMAC-SHA256(pin) -> non-extractable AES-256-GCM key-encryption key. */
export async function deriveKek(pinBytes, salt, iterations) {
  const base = await subtle.importKey("raw", pinBytes, "PBKDF2", false, ["deriveKey"]);
  return subtle.deriveKey(
    { name: "PBKDF2", hash: "SHA-256", salt, iterations },
    base,
    { name: "AES-GCM", length: 256 },
    false,
    ["encrypt", "decrypt"],
  );
}

/** Raw 32-byte key -> non-extractable AES-GCM CryptoKey (the key bytes cannot be read back from it). */
export function importAesKey(raw) {
  return subtle.importKey("raw", raw, { name: "AES-GCM" }, false, ["encrypt", "decrypt"]);
}

/** jobs: [[nonce, aad, plaintext], ...] under one key -> [ciphertext||tag, ...]. */
export async function encryptBatch(key, jobs) {
  const out = await Promise.all(
    jobs.map(([iv, additionalData, pt]) => subtle.encrypt({ name: "AES-GCM", iv, additionalData }, key, pt)),
  );
  return out.map((b) => new Uint8Array(b));
}

/**
 * encryptBatch with one buffer each way: a pull page of 1,000 records as 3,000 small arrays costs more to
 * convert between Python and JS than AES-GCM on them. nonces: 12 bytes each, back to back; aads and pts back
 * to back with their byte lengths -> every ciphertext||tag back to back (each 16 bytes longer than its pt).
 */
export async function encryptPacked(key, nonces, aads, aadLens, pts, ptLens) {
  const pending = [];
  let a = 0;
  let p = 0;
  for (let k = 0; k < ptLens.length; k++) {
    const iv = nonces.subarray(12 * k, 12 * k + 12);
    const additionalData = aads.subarray(a, a + aadLens[k]);
    pending.push(subtle.encrypt({ name: "AES-GCM", iv, additionalData }, key, pts.subarray(p, p + ptLens[k])));
    a += aadLens[k];
    p += ptLens[k];
  }
  const cts = await Promise.all(pending);
  const out = new Uint8Array(p + 16 * ptLens.length);
  let o = 0;
  for (const c of cts) {
    out.set(new Uint8Array(c), o);
    o += c.byteLength;
  }
  return out;
}

/** keys: {keyId: CryptoKey}; jobs: [[keyId, nonce, aad, ciphertext], ...] -> [plaintext | null (tag failure)]. */
export async function decryptBatch(keys, jobs) {
  const out = await Promise.all(
    jobs.map(([kid, iv, additionalData, ct]) => {
      const key = keys instanceof CryptoKey ? keys : keys.get ? keys.get(kid) : keys[kid];
      if (!key) return Promise.resolve(null);
      return subtle.decrypt({ name: "AES-GCM", iv, additionalData }, key, ct).then(
        (b) => new Uint8Array(b),
        () => null,
      );
    }),
  );
  return out;
}

/**
 * Import many raw AES keys (envelope v2 block keys, derived in Python) into `map` under `names`, in ONE
 * crossing: [name, ...], [raw, ...]. The CryptoKeys are non-extractable.
 */
export async function importAesKeys(map, names, raws) {
  const keys = await Promise.all(raws.map((raw) => importAesKey(raw)));
  names.forEach((n, i) => map.set(n, keys[i]));
  return names.length;
}

/**
 * Recovery files (issue 13 item 5; PROTOCOL.md "Recovery files"): seal `pt` to the server's recovery public key
 * (65-byte P-256 point) — ECDH with a fresh ephemeral key, HKDF-SHA256 (salt empty, info = infoPrefix ‖ epk ‖
 * recipient) to an AES-256-GCM key. Returns [epk, ciphertext+tag]. Python builds every byte string.
 */
export async function recoverySeal(pub, infoPrefix, aad, iv, pt) {
  const P256 = { name: "ECDH", namedCurve: "P-256" };
  const recipient = await subtle.importKey("raw", pub, P256, false, []);
  const eph = await subtle.generateKey(P256, false, ["deriveBits"]);
  const z = await subtle.deriveBits({ name: "ECDH", public: recipient }, eph.privateKey, 256);
  const epk = new Uint8Array(await subtle.exportKey("raw", eph.publicKey));
  const info = new Uint8Array(infoPrefix.length + epk.length + pub.length);
  info.set(infoPrefix, 0);
  info.set(epk, infoPrefix.length);
  info.set(pub, infoPrefix.length + epk.length);
  const ikm = await subtle.importKey("raw", z, "HKDF", false, ["deriveKey"]);
  const key = await subtle.deriveKey({ name: "HKDF", hash: "SHA-256", salt: new Uint8Array(0), info }, ikm,
    { name: "AES-GCM", length: 256 }, false, ["encrypt"]);
  const ct = new Uint8Array(await subtle.encrypt({ name: "AES-GCM", iv, additionalData: aad, tagLength: 128 }, key, pt));
  return [epk, ct];
}
